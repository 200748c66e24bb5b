"""Error types shared by every stage.

Every error the toolkit raises on bad user input derives from :class:`TalkfaceError`. Its message
is one line that names the file (or folder) and the problem; the ``talkface`` command prints it as
``talkface: error: <message>`` and exits with status 2.
"""


class TalkfaceError(Exception):
    """Base class of errors caused by user input (files, folders, options)."""


class MediaError(TalkfaceError):
    """A media file is missing, unreadable, corrupt, or has no usable stream."""


class NoAudioStreamError(MediaError):
    """A media file was read but contains no audio stream."""


class OutputError(TalkfaceError):
    """An output file or folder cannot be written."""
