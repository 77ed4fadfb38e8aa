"""absl flags that several experiments scripts define under one name (outdir, data_dir, workroot, ...).

The first module to define a name defines the flag; a module imported later takes that same flag instead of
failing with DuplicateFlagError, so the scripts' modules can be imported together (the tests do). A script run
on its own defines its flags first, with its own defaults.
"""

from absl import flags


def define(define_function, name: str, *args, **kwargs) -> flags.FlagHolder:
    """`define_function(name, *args, **kwargs)` (e.g. flags.DEFINE_string), or a holder of the flag `name` that
    another module defined already."""
    if name in flags.FLAGS:
        return flags.FlagHolder(flags.FLAGS, flags.FLAGS[name])
    return define_function(name, *args, **kwargs)
