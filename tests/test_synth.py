import numpy as np

from sarbridge.runtime.synth import synth_scene


def test_deterministic_and_plausible():
    a, b = synth_scene(5, 256, 320), synth_scene(5, 256, 320)
    np.testing.assert_array_equal(a.sar, b.sar)
    np.testing.assert_array_equal(a.optical, b.optical)
    np.testing.assert_array_equal(a.boxes, b.boxes)
    assert not np.array_equal(synth_scene(6, 256, 320).sar, a.sar)
    assert a.sar.shape == (256, 320) and a.optical.shape == (256, 320, 3)
    assert len(a.boxes) >= 3
    assert (
        (a.boxes[:, :2] >= 0).all()
        and (a.boxes[:, 2] <= 320).all()
        and (a.boxes[:, 3] <= 256).all()
    )
    sea = a.sar[~a.land]
    for x1, y1, x2, y2 in a.boxes.astype(int):
        assert a.sar[y1:y2, x1:x2].max() > 10 * np.median(sea)  # ships stand out of the clutter
        assert not a.land[y1:y2, x1:x2].any()
    # speckle: single-look sea amplitude has a coefficient of variation near 0.52 (Rayleigh)
    one_look = synth_scene(5, 256, 320, looks=1, land=False, n_ships=0).sar
    cv = one_look.std() / one_look.mean()
    assert 0.5 < cv < 0.9
    assert a.sar_uint16().dtype == np.uint16 and a.sar_uint8().dtype == np.uint8
