"""Training recipes: a config dataclass and the work of one kind of run (:mod:`.detect`,
:mod:`.bnn`), each handing its prepare/finish steps to the one run skeleton in
:mod:`.common`."""
