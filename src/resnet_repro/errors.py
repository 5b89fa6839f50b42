"""Errors the user can fix.

Every problem caused by user input (a bad argument, a missing data set, a run directory
that holds another config) is raised as :class:`UserError`. The CLI prints its message
as one line and exits with code 2, without a traceback.
"""


class UserError(Exception):
    """A problem with the user's input, with a message that names the problem and the fix.

    The message must be a single line. The CLI turns it into ``error: <message>`` on
    stderr and exit code 2.
    """
