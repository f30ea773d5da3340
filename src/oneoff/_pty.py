"""The terminal side of interactive tasks: relaying operator input to a pty, window size."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import selectors

__all__ = ["Relay", "copy_winsize", "is_open", "is_tty", "read_all"]

_CHUNK = 64 * 1024


class Relay:
    """Copies the operator's stdin to the pty master, never blocking and never buffering much."""

    def __init__(self, master: int) -> None:
        self.master = master
        self.pending = b""
        self.stdin_open = is_open(0)
        self.reading = False
        self.writing = False

    def handle(self, sel: selectors.BaseSelector, fd: int, events: int) -> None:
        import selectors

        if fd == 0:
            try:
                data = os.read(0, _CHUNK)
            except OSError:
                data = b""
            if data:
                self.pending += data
            else:
                self.stdin_open = False
                # EOF on a non-tty stdin: tell the child through the line discipline (a second
                # ^D is needed when the last line is unterminated).
                if not is_tty(0):
                    self.pending += b"\x04" if self.pending.endswith(b"\n") else b"\x04\x04"
        elif events & selectors.EVENT_WRITE and self.pending:
            try:
                written = os.write(self.master, self.pending)
            except BlockingIOError:
                written = 0
            except OSError:
                written = len(self.pending)
            self.pending = self.pending[written:]
        self.update(sel)

    def update(self, sel: selectors.BaseSelector) -> None:
        """Watch stdin only while nothing is pending, the master for writing only while it is."""
        import selectors

        want_read = self.stdin_open and not self.pending
        if want_read != self.reading:
            if want_read:
                sel.register(0, selectors.EVENT_READ)
            else:
                sel.unregister(0)
            self.reading = want_read
        want_write = bool(self.pending)
        if want_write != self.writing:
            if self.master not in sel.get_map():  # output at EOF: the child is gone
                self.pending = b""
                return
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if want_write else 0)
            sel.modify(self.master, events)
            self.writing = want_write


def read_all(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


def is_tty(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False


def is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def copy_winsize(to_fd: int) -> None:
    """Give the pty (to_fd: master or slave) the operator terminal's size."""
    import fcntl
    import termios

    for source in (0, 1, 2):
        if is_tty(source):
            try:
                size = fcntl.ioctl(source, termios.TIOCGWINSZ, b"\0" * 8)
                fcntl.ioctl(to_fd, termios.TIOCSWINSZ, size)
            except OSError:
                continue
            return
