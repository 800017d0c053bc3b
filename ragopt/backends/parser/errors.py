"""The exceptions :func:`ragopt.backends.parser.parse_file` raises: one
:class:`ParseError` base (a ``ValueError``, so callers that catch bad input
generically still do) and a subclass per kind of unreadable document."""


class ParseError(ValueError):
    """A document that cannot be turned into content; the message names the file."""


class EmptyDocumentError(ParseError):
    """The file is empty or yields no text."""


class CorruptDocumentError(ParseError):
    """The file is not a valid document of the type its suffix claims."""


class UnsupportedFormatError(ParseError):
    """The file's suffix is not one this parser reads."""
