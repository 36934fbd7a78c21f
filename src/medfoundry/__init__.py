"""medfoundry: build, adapt and run medical-imaging segmentation foundation models.

The package reads like the method section of a foundation-model paper, one folder per stage:
``io`` -> ``pool`` -> ``planning`` -> ``preprocessing`` -> (``data`` -> ``models`` -> ``losses`` ->
``training`` -> ``transfer`` -> ``inference`` -> ``evaluation``) -> ``cli``.
"""

__version__ = "0.1.0"


class MedfoundryError(Exception):
    """An error caused by the user's input (a file, a config value). The CLI prints it as one line."""
