import numpy as np

from sarbridge.runtime.pairs import PairLoader, cut_patches, find_scene_pairs, split_by_scene


def test_sentinel_pairs_read_and_split_by_scene(data):
    scenes, problems = find_scene_pairs(data / "optsar_sen12_volkov100")
    assert not problems and len(scenes) == 46
    assert all((s.height, s.width) == (1024, 1024) for s in scenes)
    assert len(cut_patches(scenes, 256)) == 736
    train, test = split_by_scene(scenes, 0.2, seed=0)
    assert len(train) + len(test) == 46 and len(test) == 9
    assert not {s.scene_id for s in train} & {s.scene_id for s in test}
    train_patches, test_patches = cut_patches(train), cut_patches(test)
    assert {p.scene.scene_id for p in train_patches}.isdisjoint(
        p.scene.scene_id for p in test_patches
    )
    # stable: same seed gives the same split, another seed another
    assert split_by_scene(scenes, 0.2, seed=0)[1] == test
    assert split_by_scene(scenes, 0.2, seed=1)[1] != test


def test_sih_scene_folders_and_aligned_patches(data):
    scenes, problems = find_scene_pairs(data / "optsar_sih1733_tharun")
    assert not problems and [s.scene_id for s in scenes] == [
        f"optsar_sih1733_tharun/Pair-{i}" for i in (1, 2, 3)
    ]
    patches = cut_patches(scenes, 256)
    assert len(patches) == 162
    train, test = split_by_scene(scenes, 0.34)
    assert len(test) == 1 and len(train) == 2
    loader = PairLoader()
    sar, opt = loader.load(patches[60])
    assert sar.shape == (256, 256) and sar.dtype == np.uint8
    assert opt.shape == (256, 256, 3) and opt.dtype == np.uint8


def test_mismatched_pair_sizes_are_reported(tmp_path):
    from PIL import Image

    (tmp_path / "sar").mkdir()
    (tmp_path / "opt").mkdir()
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "sar" / "a.png")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "opt" / "a.png")
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "sar" / "b.png")
    Image.fromarray(np.zeros((32, 64, 3), np.uint8)).save(tmp_path / "opt" / "b.png")
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "sar" / "c.png")
    scenes, problems = find_scene_pairs(tmp_path)
    assert [s.scene_id.split("/")[-1] for s in scenes] == ["a"]
    msgs = sorted(str(p) for p in problems)
    assert "b.png: SAR is 64x64 but its optical pair b.png is 64x32" in msgs[0]
    assert "c.png: no optical pair" in msgs[1]


def test_qxs_saropt_layout(tmp_path):
    """QXS-SAROPT keeps 256 px pairs in opt_256_oc_0.2/ and sar_256_oc_0.2/ with matching names."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for d in ("opt_256_oc_0.2", "sar_256_oc_0.2"):
        (tmp_path / d).mkdir()
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(
            tmp_path / "opt_256_oc_0.2" / f"{i}.png"
        )
        Image.fromarray(rng.integers(0, 255, (256, 256), dtype=np.uint8)).save(
            tmp_path / "sar_256_oc_0.2" / f"{i}.png"
        )
    scenes, problems = find_scene_pairs(tmp_path)
    assert not problems and len(scenes) == 5
    assert len(cut_patches(scenes, 256)) == 5
