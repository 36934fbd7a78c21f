"""The ``medfoundry`` command line: thin wrappers that parse, call one API function, and report."""
