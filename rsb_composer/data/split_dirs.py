"""Labelling a folder of images that is not the recipe's own val split with the training classes
(``rsb-composer eval --split-dir DIR``), such as ImageNet-V2.

A folder's class folders are either named like the training classes (ImageNet's WordNet ids, ``n01440764``) and
map by name, or named by class index (ImageNet-V2's ``0`` ... ``999``) and map numerically: folder ``10`` is class
10. torchvision's ImageFolder would sort index names as strings (``0, 1, 10, 100, ...``) and number them in that
order, so folder ``10`` would become class 2: the mislabelling that made early ImageNet-V2 results meaningless
(ImageNetV2 issue #4, pytorch/vision#714). Anything else is refused, naming the folder.
"""

from __future__ import annotations

from pathlib import Path

from rsb_composer.config import ConfigError
from rsb_composer.data.datasets import list_classes


def folder_labels(split_dir: Path, classes: list[str]) -> tuple[dict[str, int], str | None]:
    """(class folder name -> label, a one-line notice or None) for ``split_dir``, labelled with ``classes``.

    Names win over indices: when the training classes are themselves numbers (a train folder named ``0`` ...
    ``N-1``), the network learnt them in the order of those names, and a folder of the same name is that class.
    """
    where = f"--split-dir {split_dir}"
    if not split_dir.is_dir():
        raise ConfigError(f"{where}: no such folder")
    folders = list_classes(split_dir)
    if not folders:
        raise ConfigError(f"{where}: holds no class folders (expected DIR/<class>/*.JPEG)")
    by_name = {name: index for index, name in enumerate(classes)}
    unnamed = [name for name in folders if name not in by_name]
    if not unnamed:
        return {name: by_name[name] for name in folders}, None
    if not all(name.isdecimal() for name in folders):
        odd = next((name for name in unnamed if not name.isdecimal()), unnamed[0])
        if odd.isdecimal():  # some folders are class names, some indices
            named = next(name for name in folders if name in by_name)
            raise ConfigError(f"{where}: folder '{odd}' is named by class index but folder '{named}' by class name; "
                              "name them all one way")
        raise ConfigError(f"{where}: folder '{odd}' is neither one of the recipe's {len(classes)} class names "
                          f"(e.g. '{classes[0]}') nor a class index (0-{len(classes) - 1})")
    beyond = next((name for name in folders if int(name) >= len(classes)), None)
    if beyond is not None:
        raise ConfigError(f"{where}: folder '{beyond}' would be class {int(beyond)}, but the recipe has "
                          f"{len(classes)} classes (0-{len(classes) - 1})")
    labels = {name: int(name) for name in folders}
    example = next((name for name in folders if int(name) >= 10), folders[-1])
    notice = (f"{split_dir}: class folders are named by class index ({len(folders)} folders, "
              f"{min(labels.values())}-{max(labels.values())}); mapped numerically (folder '{example}' is class "
              f"{int(example)}, '{classes[int(example)]}'), not in the string order torchvision's ImageFolder uses")
    return labels, notice
