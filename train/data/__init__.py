"""Training data: detection sets and their augmentation (:mod:`.detection`, :mod:`.augment`)
and the optical/SAR pairs of BNN pretraining (:mod:`.pairs`), all through the runtime's
image reading and preprocessing."""
