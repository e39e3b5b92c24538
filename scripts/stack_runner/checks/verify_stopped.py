"""`verify` with one backend stopped: only that backend's checks fail, and they name it
(verify.check_stopped). Last before the soak: it stops and starts a backend on purpose."""

from .base import Stack
from .verify import check_stopped


def check(stack: Stack) -> None:
    check_stopped(stack)
