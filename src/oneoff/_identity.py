"""Who is acting: for now the OS user (never $USER, which anyone can set)."""

from __future__ import annotations

import os
import pwd

__all__ = ["os_user"]


def os_user() -> str:
    return "os:" + pwd.getpwuid(os.getuid()).pw_name
