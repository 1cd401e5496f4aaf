"""A class-per-folder image tree (``torchvision.datasets.ImageFolder`` layout), read with PIL::

    DATA_DIR/train/<class>/**/*.png|jpg|...      one folder per class; files may sit in sub-folders
                                                 (Tiny ImageNet: train/<wnid>/images/*.JPEG)
    DATA_DIR/test/<class>/**/*.png|jpg|...       the test split: test/ if its images are labelled (in class
    DATA_DIR/val/<class>/**/*.png|jpg|...        folders), else val/ (ImageNet's layout; Tiny ImageNet's test/
    DATA_DIR/val/images/*  + val_annotations.txt   has no labels), also Tiny ImageNet's flat val/ with its
                                                 annotation file. The validation split is always carved from
                                                 train/ (``val_fraction``): next to a labelled test/, val/ is
                                                 not read (a warning says so)

Classes are the train folder names, sorted (label = position). All images become one colour mode: ``L`` (grey,
1 channel) when every image is grey, else ``RGB`` (3 channels). Images must share one size unless
``image_size`` is given, which resizes every image to ``image_size x image_size`` (bilinear).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

import numpy as np

from .splits import DataError, DatasetSplits

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp"})
_GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "F"})
_TEST_FOLDERS = ("test", "val")   # a labelled test/ is the test set; val/ stands in without one
_TINY_IMAGENET_ANNOTATIONS = "val_annotations.txt"


def _visible(name: str) -> bool:
    """Not a hidden file or folder (``.DS_Store``, ``.ipynb_checkpoints``)."""
    return not name.startswith(".")


def _image_files(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursively), sorted by path; none from hidden folders (``.ipynb_checkpoints``
    and the like hold copies, which would count twice)."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
                  and all(map(_visible, p.relative_to(folder).parts)))


def _class_tree(folder: Path, classes: list[str]) -> list[tuple[Path, int]]:
    """(file, label) for ``folder/<class>/**``; a class folder missing from ``folder`` is allowed."""
    return [(path, label) for label, name in enumerate(classes) if (folder / name).is_dir()
            for path in _image_files(folder / name)]


def _tiny_imagenet_val(folder: Path, classes: list[str]) -> list[tuple[Path, int]]:
    """(file, label) from ``val_annotations.txt``: tab-separated lines ``file  class  [box...]``; files in
    ``folder/images/``."""
    label_of = {name: i for i, name in enumerate(classes)}
    files = []
    for line_no, line in enumerate((folder / _TINY_IMAGENET_ANNOTATIONS).read_text().splitlines(), 1):
        fields = line.split("\t")
        if not line.strip():
            continue
        if len(fields) < 2 or fields[1] not in label_of:
            raise DataError(f"{folder / _TINY_IMAGENET_ANNOTATIONS}:{line_no}: expected '<file>\\t<class>' with a "
                            f"class of the train folder, got {line[:80]!r}")
        files.append((folder / "images" / fields[0], label_of[fields[1]]))
    return files


def _test_files(data_dir: Path, classes: list[str]) -> list[tuple[Path, int]]:
    """The labelled test images: from the first of ``_TEST_FOLDERS`` that has any. A test/ whose folders are not
    train's classes (an unlabelled placeholder such as test/unknown/) gives way to val/, with a warning."""
    passed_over = None   # why test/ was not taken
    for name in _TEST_FOLDERS:
        folder = data_dir / name
        if not folder.is_dir():
            continue
        if (folder / _TINY_IMAGENET_ANNOTATIONS).is_file():
            return _tiny_imagenet_val(folder, classes)
        unknown = sorted(p.name for p in folder.iterdir() if p.is_dir() and _visible(p.name) and p.name not in classes)
        if unknown and not (len(unknown) == 1 and unknown[0] == "images"):
            problem = f"folder: {folder} has class folders not in {data_dir / 'train'}: {', '.join(unknown[:5])}"
            if name == "test" and (data_dir / "val").is_dir():
                passed_over = problem
                continue
            raise DataError(problem)
        files = _class_tree(folder, classes)
        if files:
            if passed_over:
                warnings.warn(f"{passed_over}; the test split is {folder}", stacklevel=3)
            elif name == "test" and (data_dir / "val").is_dir():
                warnings.warn(f"folder: the test split is {folder}; {data_dir / 'val'} is not read (the validation "
                              f"split is carved from train/, val_fraction)", stacklevel=3)
            return files
    if passed_over:
        raise DataError(passed_over)
    raise DataError(f"folder: expected a test split as {data_dir}/test/<class>/* or {data_dir}/val/<class>/* "
                    f"(or Tiny ImageNet's val/images + val_annotations.txt); found none with images")


#: grey modes wider than 8 bits -> what divides their values into [0, 255]: 16-bit PNG/TIFF (``I;16*``, or ``I``
#: as older Pillow opens them) span [0, 65535], float images (``F``) [0, 1]. PIL's ``convert("L")`` would clip them
#: at 255 instead of scaling (a 16-bit image turns almost all white), so they are scaled here.
_WIDE_GREY = {"I;16": 257.0, "I;16B": 257.0, "I;16L": 257.0, "I;16N": 257.0, "I": 257.0, "F": 1.0 / 255.0}


def _read_images(files: list[tuple[Path, int]], mode: str, size: Optional[tuple[int, int]]) -> np.ndarray:
    """Decode ``files`` into uint8 ``[N, H, W]`` (mode ``L``) or ``[N, H, W, 3]`` (``RGB``)."""
    from PIL import Image

    images = []
    for path, _ in files:
        with Image.open(path) as img:
            # scaled in colour sets too: convert("RGB") clips a wide grey image as convert("L") does
            divisor = _WIDE_GREY.get(img.mode)
            img = img.convert(mode if divisor is None else "F")
            if size is not None and img.size != size:
                img = img.resize(size, Image.BILINEAR)
            if divisor is not None:
                pixels = np.asarray(img, dtype=np.float64) / divisor
                if pixels.size and (pixels.min() < 0 or pixels.max() > 255.0 + 1e-6):
                    raise DataError(f"{path}: expected 16-bit grey values in [0, 65535] or float ones in [0, 1]")
                grey = np.rint(pixels).astype(np.uint8)
                images.append(grey if mode == "L" else np.repeat(grey[:, :, None], 3, axis=2))
            else:
                images.append(np.asarray(img, dtype=np.uint8))
    return np.stack(images)


def load_image_folder(data_dir: Path, image_size: Optional[int] = None) -> DatasetSplits:
    """Read the image tree at ``data_dir`` (see the module docstring).

    Args:
        data_dir: the folder holding ``train/`` and ``val/`` or ``test/``.
        image_size: resize every image to ``image_size x image_size``; ``None`` keeps the sizes, which must
            then all be equal.
    Returns:
        images uint8 ``[N, C, H, W]`` with ``C`` 1 or 3.
    """
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:                                               # pragma: no cover - pillow is required
        raise DataError("folder: reading images needs pillow (pip install pillow)") from None

    train_dir = data_dir / "train"
    if not train_dir.is_dir():
        raise DataError(f"folder: expected {train_dir}/<class>/*.png|jpg (a folder per class) and "
                        f"{data_dir}/val or test/ likewise; {train_dir} is not a folder")
    classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir() and _visible(p.name))
    if not classes:
        raise DataError(f"folder: expected class folders in {train_dir}, found none")
    train_files = _class_tree(train_dir, classes)
    if not train_files:
        raise DataError(f"folder: no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) under {train_dir}")
    with_images = {label for _, label in train_files}
    empty = [name for label, name in enumerate(classes) if label not in with_images]
    if empty:           # a class with no training image would get a readout unit that nothing trains
        raise DataError(f"folder: class folders without images under {train_dir}: {', '.join(empty[:5])}; add "
                        f"images ({', '.join(sorted(IMAGE_EXTENSIONS))}) or remove them")
    test_files = _test_files(data_dir, classes)

    # first pass: headers only (PIL reads pixels lazily) -> one colour mode and one size for all
    modes, sizes = set(), set()
    for path, _ in train_files + test_files:
        try:
            with Image.open(path) as img:
                modes.add(img.mode)
                sizes.add(img.size)
        except (OSError, UnidentifiedImageError) as err:
            raise DataError(f"{path}: not a readable image ({err})") from None
    mode = "L" if modes <= _GREY_MODES else "RGB"
    if image_size is not None:
        size = (int(image_size), int(image_size))
    elif len(sizes) == 1:
        size = None
    else:
        shown = ", ".join(f"{w}x{h}" for w, h in sorted(sizes)[:4])
        raise DataError(f"folder: images under {data_dir} differ in size ({shown}, ...); pass image_size to "
                        f"resize them all to one")
    x_train, x_test = _read_images(train_files, mode, size), _read_images(test_files, mode, size)
    y_train = np.array([label for _, label in train_files], dtype=np.int64)
    y_test = np.array([label for _, label in test_files], dtype=np.int64)
    return DatasetSplits.from_arrays("folder", x_train, y_train, x_test, y_test, classes, str(data_dir))
