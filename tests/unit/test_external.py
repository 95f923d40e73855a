import zipfile
from collections import Counter

import pandas as pd
import pytest

from melanoma.external import (
    ExternalLabelsError,
    describe_differences,
    extract_images,
    index_images,
    labels_for_task,
    read_external_labels,
    resolve_external_set,
)


def _csv(tmp_path, text, name="labels.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_the_three_label_formats_are_recognised(tmp_path):
    isic = _csv(
        tmp_path,
        "image,MEL,NV,BCC,AKIEC,BKL,DF,VASC\n"
        "ISIC_1,1.0,0.0,0.0,0.0,0.0,0.0,0.0\nISIC_2,0.0,0.0,0.0,0.0,1.0,0.0,0.0\n",
    )
    frame, fmt = read_external_labels(isic)
    assert fmt == "isic2018" and list(frame["dx"]) == ["mel", "bkl"]
    assert list(frame["melanoma"]) == [1, 0] and list(frame["lesion_id"]) == ["ISIC_1", "ISIC_2"]

    ham = _csv(
        tmp_path, "lesion_id,image_id,dx,age\nL1,ISIC_1,nv,40\nL1,ISIC_2,nv,40\nL2,ISIC_3,mel,70\n"
    )
    frame, fmt = read_external_labels(ham)
    assert fmt == "ham10000" and list(frame["lesion_id"]) == ["L1", "L1", "L2"]
    assert list(labels_for_task(frame, "mel_vs_nv", fmt)["label"]) == [0, 0, 1]

    binary = _csv(tmp_path, "image_id,melanoma\nA,1\nB,0\n")
    frame, fmt = read_external_labels(binary)
    assert fmt == "binary" and list(labels_for_task(frame, "mel_vs_rest", fmt)["label"]) == [1, 0]
    with pytest.raises(ExternalLabelsError, match="cannot evaluate label task 'mel_vs_nv'"):
        labels_for_task(frame, "mel_vs_nv", fmt)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("image_id,melanoma\nA,1\nB,yes\n", r"melanoma must be 0 or 1 \(line\(s\) 3;"),
        ("image_id,dx\nA,mel\nB,melanoma\n", r"dx not one of .* \(line\(s\) 3;"),
        ("image_id,dx\nA,mel\nA,nv\n", r"duplicate image id \(line\(s\) 3;"),
        (
            "image,MEL,NV,BCC,AKIEC,BKL,DF,VASC\nI,1,1,0,0,0,0,0\n",
            r"one 1 and the rest 0 \(line\(s\) 2;",
        ),
        ("file,label\nA,1\n", r"match no known format"),
    ],
)
def test_bad_labels_are_refused_naming_the_file_and_line(tmp_path, text, message):
    path = _csv(tmp_path, text)
    with pytest.raises(ExternalLabelsError, match=message) as error:
        read_external_labels(path)
    assert str(path) in str(error.value)


def test_a_zip_of_images_is_extracted_once_and_matched_by_stem(tmp_path):
    archive = tmp_path / "set.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("set/ISIC_1.jpg", b"a")
        z.writestr("set/ISIC_2.png", b"b")
        z.writestr("__MACOSX/set/._ISIC_1.jpg", b"junk")
    labels = _csv(tmp_path, "image_id,melanoma\nISIC_1,1\n")
    external = resolve_external_set(str(archive), str(labels), tmp_path / "cache")
    index = index_images(external.images)
    assert sorted(index.by_id) == ["ISIC_1", "ISIC_2"]
    assert [p.name for p in index.skipped] == ["._ISIC_1.jpg"]  # listed, not silently dropped
    (external.images / "set/ISIC_1.jpg").write_bytes(b"changed")
    extract_images(archive, external.images)  # already complete: not extracted again
    assert (external.images / "set/ISIC_1.jpg").read_bytes() == b"changed"
    with pytest.raises(ExternalLabelsError, match="needs a labels CSV"):
        resolve_external_set(str(archive), None, tmp_path / "cache")


def test_differences_from_the_ham10000_test_split_are_reported():
    scored = pd.DataFrame({"dx": ["mel", "nv", "nv", "bcc"], "label": [1, 0, 0, 0]})
    differences = describe_differences(
        scored,
        [(1024, 768), (600, 450), (600, 450), (6000, 4000)],
        Counter({"jpeg": 3, "png": 1}),
        {"images": 100, "positives": 11, "by_dx": {"mel": 11, "nv": 89}},
        [(600, 450)] * 3,
    )
    assert differences["prevalence"] == 0.25 and differences["reference_prevalence"] == 0.11
    assert differences["dx_mix"] == {"nv": 0.5, "mel": 0.25, "bcc": 0.25}
    assert differences["reference_dx_mix"] == {"mel": 0.11, "nv": 0.89}
    assert differences["width"] == {"min": 600, "median": 812.0, "max": 6000}
    assert differences["reference_width"]["median"] == 600
    assert differences["formats"] == {"jpeg": 3, "png": 1}
