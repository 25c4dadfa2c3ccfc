"""Annotation readers: Pascal VOC XML (SSDD), COCO JSON (HRSID), YOLO txt.

All readers give the same internal record, :class:`ImageRecord`, with boxes
as float32 [N, 4] x1, y1, x2, y2 in pixels of the image, and collect every
problem they meet as a :class:`Problem` (file + what is wrong) instead of
stopping at the first: a batch reports the bad item and goes on.

VOC coordinates are taken as written (``xmin, ymin, xmax, ymax``); SSDD boxes
are integer pixel corners.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sarbridge.runtime.errors import DataError
from sarbridge.runtime.imageio import IMAGE_SUFFIXES

DEFAULT_CLASSES = ("ship",)


@dataclass
class ImageRecord:
    """One annotated image.

    Attributes:
        image_id: a stable id (the file stem for VOC/YOLO, the COCO id as text).
        path: the image file.
        height, width: image size in pixels.
        boxes: float32 [N, 4] x1, y1, x2, y2 in pixels.
        labels: int64 [N], indices into the dataset's classes.
    """

    image_id: str
    path: Path
    height: int
    width: int
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


@dataclass(frozen=True)
class Problem:
    """A bad item: the file and what is wrong with it."""

    path: Path
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass
class Dataset:
    """Records of a dataset, its class names, its splits and the problems found reading it."""

    root: Path
    format: str
    classes: tuple[str, ...]
    records: list[ImageRecord]
    splits: dict[str, list[str]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    DEFAULT_TEST_SHARE = 0.2

    def split(self, name: str) -> list[ImageRecord]:
        """Records of split ``name`` (e.g. "train", "test"), in split-file order.

        A dataset with neither a "train" nor a "test" split (e.g. one annotations.json of
        generated scenes) gets a seeded default: 20 % of its images (a fixed permutation of the
        sorted ids) are "test", the rest "train".
        """
        if name in ("train", "test") and not {"train", "test"} & set(self.splits):
            ids = sorted(r.image_id for r in self.records)
            order = np.random.default_rng(0).permutation(len(ids))
            n_test = max(1, int(round(len(ids) * self.DEFAULT_TEST_SHARE))) if len(ids) > 1 else 0
            chosen = set(ids[i] for i in order[:n_test])
            want_test = name == "test"
            return [r for r in self.records if (r.image_id in chosen) == want_test]
        if name not in self.splits:
            raise DataError(
                self.root, f"no split '{name}'; this dataset has {sorted(self.splits) or 'none'}"
            )
        by_id = {r.image_id: r for r in self.records}
        return [by_id[i] for i in self.splits[name] if i in by_id]


def dataset_digest(records: list[ImageRecord], classes: tuple[str, ...]) -> str:
    """sha256 of an annotation set: the classes and, per image (sorted by id), its id, file
    name, size, boxes (to 0.01 px) and labels. Two evaluations on one digest scored the same
    images against the same boxes."""
    import hashlib

    rows = sorted(
        (
            r.image_id,
            r.path.name,
            int(r.height),
            int(r.width),
            np.round(np.asarray(r.boxes, np.float64), 2).tolist(),
            np.asarray(r.labels).tolist(),
        )
        for r in records
    )
    text = json.dumps({"classes": list(classes), "images": rows}, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def box_problems(boxes: np.ndarray, height: int, width: int) -> list[str]:
    """What is wrong with each bad box (empty list when all are fine)."""
    msgs = []
    for k, (x1, y1, x2, y2) in enumerate(np.asarray(boxes, dtype=np.float64).reshape(-1, 4)):
        if not np.isfinite([x1, y1, x2, y2]).all():
            msgs.append(f"box {k} has non-numeric coordinates")
        elif x2 <= x1 or y2 <= y1:
            msgs.append(f"box {k} ({x1:g}, {y1:g}, {x2:g}, {y2:g}) is empty or degenerate")
        elif x1 < 0 or y1 < 0 or x2 > width or y2 > height:
            msgs.append(
                f"box {k} ({x1:g}, {y1:g}, {x2:g}, {y2:g}) lies outside the {width}x{height} image"
            )
    return msgs


def _find_image(folder: Path, stem: str) -> Path | None:
    for suffix in (".jpg", ".png", ".tif", ".tiff", ".jpeg", ".bmp", ".JPG", ".PNG", ".TIF"):
        p = folder / f"{stem}{suffix}"
        if p.is_file():
            return p
    return None


def _voc_number(obj: ET.Element, tag: str, xml_path: Path) -> float:
    node = obj.find(f"bndbox/{tag}")
    if node is None or node.text is None:
        raise DataError(xml_path, f"an <object> has no <bndbox>/<{tag}>")
    try:
        return float(node.text)
    except ValueError as exc:
        raise DataError(xml_path, f"<{tag}> is not a number: {node.text!r}") from exc


def read_voc_xml(xml_path: str | Path, classes: tuple[str, ...] = DEFAULT_CLASSES, image_dir=None):
    """Parse one VOC XML file.

    Returns:
        (ImageRecord, list of problem messages for its boxes).

    Raises:
        DataError: unparsable XML, missing size, unknown class.
    """
    xml_path = Path(xml_path)
    try:
        root = ET.parse(xml_path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise DataError(xml_path, f"cannot parse XML ({exc})") from exc
    stem = xml_path.stem
    image_dir = Path(image_dir) if image_dir is not None else xml_path.parent.parent / "JPEGImages"
    fname = (root.findtext("filename") or "").strip()
    if fname and (Path(fname).name != fname or fname in (".", "..")):
        raise DataError(
            xml_path,
            f"<filename> {fname!r} is not a plain file name in {image_dir.name}/ (it would read "
            "an image outside the dataset)",
        )
    path = (
        image_dir / fname
        if fname and (image_dir / fname).is_file()
        else _find_image(image_dir, stem)
    )
    try:
        width = int(float(root.findtext("size/width")))
        height = int(float(root.findtext("size/height")))
    except (TypeError, ValueError, OverflowError) as exc:
        raise DataError(xml_path, "missing or invalid <size><width>/<height>") from exc
    if width <= 0 or height <= 0:
        raise DataError(xml_path, f"<size> must be positive, got {width} x {height}")
    boxes, labels = [], []
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        if name not in classes:
            raise DataError(xml_path, f"unknown class {name!r}; expected one of {list(classes)}")
        boxes.append([_voc_number(obj, t, xml_path) for t in ("xmin", "ymin", "xmax", "ymax")])
        labels.append(classes.index(name))
    boxes_arr = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    rec = ImageRecord(
        image_id=stem,
        path=path if path is not None else image_dir / f"{stem}.jpg",
        height=height,
        width=width,
        boxes=boxes_arr,
        labels=np.asarray(labels, dtype=np.int64),
    )
    return rec, box_problems(boxes_arr, height, width)


def _read_split_files(root: Path, problems: list[Problem]) -> dict[str, list[str]]:
    splits = {}
    main = root / "ImageSets" / "Main"
    if main.is_dir():
        for f in sorted(main.glob("*.txt")):
            if "_" in f.stem:  # per-class files like ship_train.txt
                continue
            try:
                text = f.read_text()
            except (OSError, UnicodeDecodeError) as exc:
                problems.append(Problem(f, f"cannot read split file ({type(exc).__name__})"))
                continue
            splits[f.stem] = [line.split()[0] for line in text.splitlines() if line.strip()]
    return splits


def _with_progress(items, desc: str, progress: bool):
    if not progress:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="file", leave=False)


def read_voc(
    root: str | Path, classes: tuple[str, ...] = DEFAULT_CLASSES, progress: bool = False
) -> Dataset:
    """Read a VOC-layout dataset (Annotations/, JPEGImages/, ImageSets/Main/*.txt).

    Boxes that are bad (outside the image, empty) are kept out of the records
    and reported as problems; an unreadable XML is reported and skipped.
    """
    root = Path(root)
    ann_dir = root / "Annotations"
    if not ann_dir.is_dir():
        raise DataError(root, "not a VOC dataset: no Annotations/ folder")
    records, problems = [], []
    xml_files = sorted(ann_dir.glob("*.xml"))
    if not xml_files:
        raise DataError(ann_dir, "no .xml annotation files")
    for xml_path in _with_progress(xml_files, "reading VOC XML", progress):
        try:
            rec, box_msgs = read_voc_xml(xml_path, classes, root / "JPEGImages")
        except DataError as exc:
            problems.append(Problem(exc.path, exc.reason))
            continue
        if box_msgs:
            problems.extend(Problem(xml_path, m) for m in box_msgs)
            good = np.asarray(
                [not box_problems(b[None], rec.height, rec.width) for b in rec.boxes], bool
            )
            rec.boxes, rec.labels = rec.boxes[good], rec.labels[good]
        if not rec.path.is_file():
            problems.append(Problem(xml_path, f"its image {rec.path.name} is missing"))
            continue
        records.append(rec)
    # images without an annotation file
    img_dir = root / "JPEGImages"
    if img_dir.is_dir():
        annotated = {r.path.name for r in records} | {p.stem for p in xml_files}
        for img in sorted(img_dir.iterdir()):
            if (
                img.suffix.lower() in IMAGE_SUFFIXES
                and img.name not in annotated
                and img.stem not in annotated
            ):
                problems.append(Problem(img, "no annotation file for this image"))
    splits = _read_split_files(root, problems)
    return Dataset(root, "voc", tuple(classes), records, splits, problems)


def _coco_lists(data, json_path: Path) -> None:
    """The document-level shape of a COCO file: an object with three lists (else DataError)."""
    if not isinstance(data, dict):
        raise DataError(
            json_path, f"not a COCO detection file: the top level is a {type(data).__name__}, "
            "not an object with 'images', 'annotations' and 'categories'"
        )  # fmt: skip
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise DataError(json_path, f"not a COCO detection file: no '{key}' list")
        if not isinstance(data[key], list):
            raise DataError(
                json_path, f"field '{key}' must be a list, got {type(data[key]).__name__}"
            )


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _coco_categories(cats: list, json_path: Path, problems: list[Problem]) -> list[dict]:
    """Categories with an int id and a str name, sorted by id; the others become problems."""
    good, seen = [], set()
    for k, c in enumerate(cats):
        if not isinstance(c, dict) or not _is_int(c.get("id")) or not isinstance(c.get("name"), str):
            problems.append(
                Problem(json_path, f"categories[{k}] needs an int 'id' and a str 'name': {c!r:.80}")
            )
        elif c["id"] in seen:
            problems.append(Problem(json_path, f"categories[{k}]: duplicate id {c['id']}"))
        else:
            seen.add(c["id"])
            good.append(c)
    if not good:
        raise DataError(json_path, "no valid category (each needs an int 'id' and a str 'name')")
    return sorted(good, key=lambda c: c["id"])


def _coco_image_problem(img, k: int) -> str | None:
    """What is wrong with images[k] (None when it is usable)."""
    if not isinstance(img, dict):
        return f"images[{k}] must be an object, got {type(img).__name__}"
    if not _is_int(img.get("id")):
        return f"images[{k}] has no int 'id' ({img.get('id')!r:.40})"
    name = img.get("file_name")
    if not isinstance(name, str) or not name.strip():
        return f"images[{k}] (id {img['id']}) has no 'file_name'"
    if Path(name).is_absolute() or ".." in Path(name).parts:
        return f"images[{k}] (id {img['id']}): file_name {name!r} leaves the image folder"
    for key in ("height", "width"):
        v = img.get(key)
        if isinstance(v, float) and v.is_integer():  # 512.0, as some tools write it
            v = img[key] = int(v)
        if not _is_int(v) or v <= 0:
            return f"images[{k}] (id {img['id']}): '{key}' must be a positive int, got {v!r:.40}"
    return None


def _coco_box(ann) -> tuple[list[float] | None, str | None]:
    """An annotation's bbox as [x1, y1, x2, y2], or the reason it has none."""
    bbox = ann.get("bbox")
    if (
        not isinstance(bbox, list)
        or len(bbox) != 4
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox)
    ):
        return None, f"annotation {ann.get('id')!r:.40} has no valid bbox ({bbox!r:.60})"
    try:
        x, y, w, h = (float(v) for v in bbox)
    except OverflowError:
        return None, f"annotation {ann.get('id')!r:.40} has a bbox number too large for a float"
    return [x, y, x + w, y + h], None


def read_coco(
    json_path: str | Path, image_root: str | Path | None = None, progress: bool = False
) -> Dataset:
    """Read a COCO detection JSON (HRSID layout: bbox = [x, y, w, h]).

    Every bad entry (an image without an int id, a file name, a positive size; a duplicate
    image id; an annotation without a 4-number bbox, of an unknown image or category) is a
    :class:`Problem` naming the file and the entry, and is left out; the rest is read.

    Args:
        json_path: the annotation file.
        image_root: folder of the images; default: the JSON's folder, or a
            sibling ``images/``/``JPEGImages/`` folder when file names are bare.

    Raises:
        DataError: the file cannot be read, is not JSON, or is not a COCO document (no
            object with 'images', 'annotations' and 'categories' lists, no valid category).
    """
    json_path = Path(json_path)
    try:
        data = json.loads(json_path.read_text())
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: bad JSON, UTF-8, digits
        raise DataError(json_path, f"cannot read COCO JSON ({type(exc).__name__}: {exc})") from exc
    _coco_lists(data, json_path)
    problems: list[Problem] = []
    cats = _coco_categories(data["categories"], json_path, problems)
    classes = tuple(c["name"] for c in cats)
    cat_index = {c["id"]: i for i, c in enumerate(cats)}
    if image_root is None:
        image_root = json_path.parent
        for cand in ("images", "JPEGImages", "../images", "../JPEGImages"):
            if (json_path.parent / cand).is_dir():
                image_root = json_path.parent / cand
                break
    image_root = Path(image_root)
    images: dict[int, dict] = {}
    for k, img in enumerate(data["images"]):
        bad = _coco_image_problem(img, k)
        if bad is None and img["id"] in images:
            bad = f"images[{k}]: duplicate image id {img['id']} (kept the first)"
        if bad is not None:
            problems.append(Problem(json_path, bad))
            continue
        images[img["id"]] = img
    by_image: dict[int, list[dict]] = {}
    for k, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict):
            problems.append(Problem(json_path, f"annotations[{k}] must be an object"))
        elif not _is_int(ann.get("image_id")) or ann["image_id"] not in images:
            problems.append(
                Problem(
                    json_path,
                    f"annotation {ann.get('id')!r:.40} refers to image id "
                    f"{ann.get('image_id')!r:.40}, which is not a valid image",
                )
            )
        else:
            by_image.setdefault(ann["image_id"], []).append(ann)
    records = []
    for img in _with_progress(list(images.values()), "reading COCO", progress):
        boxes, labels, msgs = [], [], []
        for ann in by_image.get(img["id"], []):
            if ann.get("iscrowd", 0):
                continue
            box, bad = _coco_box(ann)
            if bad is not None:
                msgs.append(bad)
                continue
            if not _is_int(ann.get("category_id")) or ann["category_id"] not in cat_index:
                msgs.append(
                    f"annotation {ann.get('id')!r:.40} has unknown category "
                    f"{ann.get('category_id')!r:.40}"
                )
                continue
            boxes.append(box)
            labels.append(cat_index[ann["category_id"]])
        boxes_arr = np.asarray(boxes, np.float32).reshape(-1, 4)
        labels_arr = np.asarray(labels, np.int64)
        bad = box_problems(boxes_arr, img["height"], img["width"])
        if bad:
            good = np.asarray(
                [not box_problems(b[None], img["height"], img["width"]) for b in boxes_arr], bool
            )
            boxes_arr, labels_arr = boxes_arr[good], labels_arr[good]
        where = image_root / img["file_name"]
        problems.extend(Problem(where, m) for m in msgs + bad)
        records.append(
            ImageRecord(str(img["id"]), where, img["height"], img["width"], boxes_arr, labels_arr)
        )
    return Dataset(json_path.parent, "coco", classes, records, {}, problems)


def read_yolo(
    images_dir: str | Path,
    labels_dir: str | Path | None = None,
    classes: tuple[str, ...] = DEFAULT_CLASSES,
    progress: bool = False,
) -> Dataset:
    """Read YOLO txt labels (``class cx cy w h``, normalised to [0, 1]).

    Args:
        images_dir: folder of images.
        labels_dir: folder of .txt files with the same stems; default: the
            sibling ``labels`` folder (``images`` -> ``labels``).
    """
    from sarbridge.runtime.imageio import image_size

    images_dir = Path(images_dir)
    if labels_dir is None:
        labels_dir = images_dir.parent / images_dir.name.replace("images", "labels")
    labels_dir = Path(labels_dir)
    records, problems = [], []
    images = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    for img in _with_progress(images, "reading YOLO", progress):
        txt = labels_dir / f"{img.stem}.txt"
        try:
            height, width = image_size(img)
        except DataError as exc:
            problems.append(Problem(exc.path, exc.reason))
            continue
        boxes, labels = [], []
        try:
            lines = txt.read_text().splitlines() if txt.is_file() else []
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(Problem(txt, f"cannot read labels ({type(exc).__name__}: {exc})"))
            continue
        if lines:
            for n, line in enumerate(lines, 1):
                parts = line.split()
                if not parts:
                    continue
                try:
                    c, cx, cy, w, h = int(parts[0]), *(float(v) for v in parts[1:5])
                    if len(parts) < 5:
                        raise ValueError
                except ValueError:
                    problems.append(Problem(txt, f"line {n} is not 'class cx cy w h': {line!r}"))
                    continue
                if not 0 <= c < len(classes):
                    problems.append(Problem(txt, f"line {n}: class {c} not in {list(classes)}"))
                    continue
                boxes.append(
                    [
                        (cx - w / 2) * width,
                        (cy - h / 2) * height,
                        (cx + w / 2) * width,
                        (cy + h / 2) * height,
                    ]
                )
                labels.append(c)
        boxes_arr = np.asarray(boxes, np.float32).reshape(-1, 4)
        labels_arr = np.asarray(labels, np.int64)
        bad = box_problems(boxes_arr, height, width)
        if bad:
            problems.extend(Problem(txt, m) for m in bad)
            good = np.asarray([not box_problems(b[None], height, width) for b in boxes_arr], bool)
            boxes_arr, labels_arr = boxes_arr[good], labels_arr[good]
        records.append(ImageRecord(img.stem, img, height, width, boxes_arr, labels_arr))
    return Dataset(images_dir, "yolo", tuple(classes), records, {}, problems)


def detect_format(path: str | Path) -> str:
    """Which annotation format a path holds: "voc", "coco" or "yolo"."""
    path = Path(path)
    if path.is_file() and path.suffix.lower() == ".json":
        return "coco"
    if not path.is_dir():
        raise DataError(path, "no such file or folder")
    if (path / "Annotations").is_dir():
        return "voc"
    if list(path.glob("*.json")) or list(path.glob("annotations/*.json")):
        return "coco"
    if (path / "labels").is_dir() and (path / "images").is_dir():
        return "yolo"
    raise DataError(
        path,
        "cannot tell the dataset format: expected Annotations/ (VOC), a COCO .json, or images/ + labels/ (YOLO)",
    )


def read_dataset(path: str | Path, progress: bool = False) -> Dataset:
    """Read a dataset in any supported format (see :func:`detect_format`)."""
    path = Path(path)
    fmt = detect_format(path)
    if fmt == "voc":
        return read_voc(path, progress=progress)
    if fmt == "yolo":
        return read_yolo(path / "images", path / "labels", progress=progress)
    if path.is_file():
        return read_coco(path, progress=progress)
    jsons = sorted(path.glob("*.json")) or sorted(path.glob("annotations/*.json"))
    datasets, read, bad_files = [], [], []
    for j in jsons:
        try:
            datasets.append(read_coco(j, progress=progress))
            read.append(j)
        except DataError as exc:  # one bad file: reported, the others are read
            bad_files.append(Problem(exc.path, exc.reason))
    if not datasets:
        raise DataError(path, "no readable COCO file: " + "; ".join(str(p) for p in bad_files))
    jsons = read
    first = datasets[0]
    records, problems, splits = [], list(bad_files), {}
    for j, ds in zip(jsons, datasets, strict=True):
        if ds.classes != first.classes:
            raise DataError(
                j, f"classes {ds.classes} differ from {first.classes} in {jsons[0].name}"
            )
        for r in ds.records:
            r.image_id = f"{j.stem}/{r.image_id}"
        records += ds.records
        problems += ds.problems
        splits[j.stem] = [r.image_id for r in ds.records]
    return Dataset(path, "coco", first.classes, records, splits, problems)
