"""The one exception type for errors a user can cause (bad file, bad option, missing extra).

Commands catch `FastdavsError` and print its message as one line with a non-zero exit;
anything else is a bug and keeps its traceback.
"""


class FastdavsError(Exception):
    """A user-caused error; the message names the file or option and what to do."""


class DataError(FastdavsError):
    """A media or data file cannot be used (unreadable, no audio, too short, no face...)."""


class CheckpointError(FastdavsError):
    """A checkpoint cannot be written or used (damaged, edited, wrong model, newer format...)."""


class OptionError(FastdavsError):
    """An option, or a combination of options, that the command cannot honour."""
