"""medfoundry: build, adapt and run medical-imaging segmentation foundation models.

The package reads like the method section of a foundation-model paper, one folder per stage, each
importing only those before it (checked by ``lint-imports``): ``utils`` -> ``io`` -> ``pool`` /
``synth`` / ``models`` -> ``planning`` -> ``preprocessing`` / ``runs`` -> ``data`` / ``losses`` /
``evaluation`` -> ``tasks`` -> ``inference`` -> ``training`` -> ``transfer`` -> ``workflows`` ->
``api`` -> ``cli``.
"""

__version__ = "0.1.0"


class MedfoundryError(Exception):
    """An error caused by the user's input (a file, a config value). The CLI prints it as one line.

    Every subclass survives pickling whatever its ``__init__`` takes (a worker process's error must
    be rebuilt in the parent: an error that cannot be hangs a ``multiprocessing`` pool).
    """

    def __reduce__(self):
        return (_rebuild_error, (type(self), self.args, dict(self.__dict__)))


def _rebuild_error(cls: type, args: tuple, state: dict) -> MedfoundryError:
    err = Exception.__new__(cls)
    err.args = args
    err.__dict__.update(state)
    return err
