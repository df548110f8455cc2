"""Process-wide memory settings applied before the daemon starts its threads.

glibc gives each thread that allocates its own malloc arena, and the pages an
arena once touched stay resident. With ten or more threads that costs mitod
about 2 MiB of RSS for no speed it needs (measured with 10 sites, see
docs/benchmarks.md), so the daemon limits glibc to two arenas, as
``MALLOC_ARENA_MAX=2`` would. Elsewhere (musl, or no ctypes) this does nothing.
"""

import logging

log = logging.getLogger(__name__)

M_ARENA_MAX = -8  # from glibc's malloc.h
ARENAS = 2


def limit_malloc_arenas(arenas: int = ARENAS) -> bool:
    """Ask glibc to use at most ``arenas`` malloc arenas; return True if it accepted."""
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (ImportError, OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return mallopt(M_ARENA_MAX, arenas) == 1
