import io

import cv2
import numpy as np
import pytest

from melanoma.images import (
    NO_PARITY,
    ImageDecodeError,
    PreprocessConfig,
    ResolutionParity,
    augment,
    augment_seed,
    crop_to_lesion,
    decode_image,
    jpeg_quality,
    match_resolution,
    preprocess_image,
    reduction_factor,
    remove_hair,
    segment_lesion,
    shrink_to_long_side,
    typical_jpeg_quality,
)
from tests.synthetic import lesion_image


def png(image_bgr: np.ndarray) -> bytes:
    return cv2.imencode(".png", image_bgr)[1].tobytes()


def jpeg(image_bgr: np.ndarray, quality: int = 95) -> bytes:
    return cv2.imencode(".jpg", image_bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()


@pytest.fixture
def fullres():
    image, mask = lesion_image(np.random.default_rng(0), (600, 450))
    return image, mask


def test_output_shape_dtype_and_rgb_order():
    bgr = np.zeros((50, 80, 3), np.uint8)
    bgr[..., 2] = 255  # red in OpenCV's BGR
    out = preprocess_image(cv2.imencode(".png", bgr)[1].tobytes(), PreprocessConfig(size=32))
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    assert (out[..., 0] == 255).all() and (out[..., 1:] == 0).all(), "channels must be RGB"


def test_at_the_archives_own_aspect_an_image_of_that_size_reaches_the_model_unresampled():
    """image_size 150, image_width 200: HAM10000's 200x150 images as they are."""
    config = PreprocessConfig(size=150, width=200)
    assert config.shape == (150, 200) and PreprocessConfig(size=96).shape == (96, 96)
    rgb = np.random.default_rng(2).integers(0, 256, (150, 200, 3), dtype=np.uint8)
    data = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes()
    np.testing.assert_array_equal(preprocess_image(data, config), rgb)
    # A 600x450 image is shrunk to it; a square one is stretched to the model's aspect.
    big = cv2.resize(rgb, (600, 450), interpolation=cv2.INTER_CUBIC)
    data = cv2.imencode(".png", cv2.cvtColor(big, cv2.COLOR_RGB2BGR))[1].tobytes()
    assert preprocess_image(data, config, (600, 450)).shape == (150, 200, 3)
    square = cv2.imencode(
        ".png", np.full((90, 90, 3), 40, np.uint8) + np.eye(90, dtype=np.uint8)[..., None]
    )[1]
    assert preprocess_image(square.tobytes(), config).shape == (150, 200, 3)


def test_a_width_below_the_smallest_input_is_refused():
    with pytest.raises(ValueError, match=r"image_width.*0 \(square\) or at least 32, got 8"):
        PreprocessConfig(size=150, width=8)


def test_reduction_factor_never_goes_below_target():
    assert reduction_factor((600, 450), 224) == 2
    assert reduction_factor((200, 150), 224) == 1
    assert reduction_factor((1800, 1350), 224) == 4
    assert reduction_factor(None, 224) == 1


def test_reduced_decode_is_close_to_full_decode(fullres):
    data = jpeg(fullres[0])
    reduced = preprocess_image(data, PreprocessConfig(reduced_decode=True), (600, 450))
    full = preprocess_image(data, PreprocessConfig(reduced_decode=False), (600, 450))
    assert decode_image(data, 224, (600, 450)).shape == (225, 300, 3)  # decoded at half size
    # Stated tolerance: mean absolute difference under 2 grey levels, 99th percentile under 12.
    diff = np.abs(reduced.astype(int) - full.astype(int))
    assert diff.mean() < 2.0 and np.percentile(diff, 99) < 12


def test_undecodable_bytes_raise():
    with pytest.raises(ImageDecodeError):
        decode_image(b"\xff\xd8\xff garbage")


def test_augmentation_is_deterministic_for_a_seed(fullres):
    image = preprocess_image(jpeg(fullres[0]), PreprocessConfig(size=64))
    a = augment(image, augment_seed(42, "ISIC_0000001", 1))
    b = augment(image, augment_seed(42, "ISIC_0000001", 1))
    c = augment(image, augment_seed(42, "ISIC_0000001", 2))
    assert a.shape == image.shape and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert not np.array_equal(a, image)


def test_hair_removal_leaves_hair_free_image_nearly_unchanged_and_removes_hair(fullres):
    # Dermoscopy skin is smooth at this scale; the generator's pixel noise is not.
    image = cv2.GaussianBlur(cv2.cvtColor(fullres[0], cv2.COLOR_BGR2RGB), (7, 7), 0)
    clean = remove_hair(image)
    assert np.abs(clean.astype(int) - image.astype(int)).mean() < 1.0
    hairy = image.copy()
    for x in range(40, 600, 60):
        cv2.line(hairy, (x, 0), (x + 80, 449), (20, 15, 10), 2)
    hair_pixels = np.abs(hairy.astype(int) - image.astype(int)).sum(axis=2) > 60
    restored = remove_hair(hairy)
    before = np.abs(hairy.astype(int) - image.astype(int))[hair_pixels].mean()
    after = np.abs(restored.astype(int) - image.astype(int))[hair_pixels].mean()
    assert after < 0.35 * before


def test_segmentation_and_crop_find_the_lesion(fullres):
    image = cv2.cvtColor(fullres[0], cv2.COLOR_BGR2RGB)
    truth = fullres[1] > 0
    found = segment_lesion(image) > 0
    assert (found & truth).sum() / (found | truth).sum() > 0.8
    crop = crop_to_lesion(image, fullres[1])
    assert crop.shape[0] == crop.shape[1] and crop.shape[0] < 450
    ys, xs = np.nonzero(truth)
    cropped_mask = crop_to_lesion(fullres[1], fullres[1])
    assert cropped_mask.sum() // 255 == truth.sum(), "the whole lesion stays inside the crop"
    assert len(xs) and len(ys)


def test_invalid_config():
    with pytest.raises(ValueError, match="interpolation"):
        PreprocessConfig(interpolation="nearest-ish")


def test_shades_of_gray_maps_a_colour_cast_grey_card_to_neutral():
    from melanoma.images import shades_of_gray

    rng = np.random.default_rng(0)
    card = np.full((60, 80, 3), 128.0) + rng.normal(0, 4, (60, 80, 3))  # a textured grey card
    cast = np.clip(card * np.array([1.35, 1.0, 0.6]), 0, 255).astype(np.uint8)  # warm light
    corrected = shades_of_gray(cast).astype(float)
    means = corrected.reshape(-1, 3).mean(axis=0)
    assert np.ptp(cast.reshape(-1, 3).mean(axis=0)) > 60
    assert np.ptp(means) < 2, means  # neutral: the channels agree
    assert shades_of_gray(np.zeros((4, 4, 3), np.uint8)).max() == 0


def test_colour_constancy_is_one_step_of_preprocessing():
    from melanoma.images import PreprocessConfig, preprocess_image, shades_of_gray

    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    data = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))[1].tobytes()
    plain = preprocess_image(data, PreprocessConfig(size=32))
    balanced = preprocess_image(data, PreprocessConfig(size=32, color_constancy=True))
    np.testing.assert_array_equal(
        balanced,
        preprocess_image(
            cv2.imencode(".png", cv2.cvtColor(shades_of_gray(image), cv2.COLOR_RGB2BGR))[
                1
            ].tobytes(),
            PreprocessConfig(size=32),
        ),
    )
    assert not np.array_equal(plain, balanced)


def test_the_eight_dihedral_views_are_distinct_rearrangements():
    from melanoma.images import dihedral_views

    batch = np.arange(2 * 5 * 5 * 3).reshape(2, 5, 5, 3)
    views = dihedral_views(batch, 8)
    assert len({v.tobytes() for v in views}) == 8
    for v in views:
        assert sorted(v[0].ravel()) == sorted(batch[0].ravel())
    np.testing.assert_array_equal(views[4][0], np.rot90(batch[0]))
    np.testing.assert_array_equal(views[5][0], np.rot90(batch[0], -1))
    assert [len(dihedral_views(batch, n)) for n in (1, 2, 4)] == [1, 2, 4]
    with pytest.raises(ValueError, match="1, 2, 4, 8"):
        dihedral_views(batch, 3)
    # A non-square batch keeps its shape in the flips and the 180° turn, and has no 90° view.
    wide = np.arange(2 * 4 * 6 * 3).reshape(2, 4, 6, 3)
    assert {v.shape for v in dihedral_views(wide, 4)} == {wide.shape}
    with pytest.raises(ValueError, match="square image, not 4x6: use 1, 2 or 4"):
        dihedral_views(wide, 8)


def test_match_resolution_shrinks_only_larger_images_and_keeps_their_aspect():
    image = np.zeros((450, 600, 3), np.uint8)
    assert match_resolution(image, NO_PARITY) is image
    assert match_resolution(image, ResolutionParity(600, 75)) is image
    assert match_resolution(image, ResolutionParity(900)) is image
    assert match_resolution(image, ResolutionParity(200)).shape == (150, 200, 3)
    wide = np.zeros((560, 768, 3), np.uint8)
    assert match_resolution(wide, ResolutionParity(200, 75)).shape == (146, 200, 3)
    assert shrink_to_long_side(wide, 200).shape == (146, 200, 3)
    assert shrink_to_long_side(wide, 900) is wide


@pytest.mark.parametrize("quality", [5, 20, 50, 75, 90, 95, 100])
def test_the_quality_a_jpeg_was_saved_at_is_read_back_from_its_header(quality):
    """From OpenCV's and Pillow's encoders alike (both scale libjpeg's tables)."""
    import PIL.Image

    image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    saved = io.BytesIO()
    PIL.Image.fromarray(image).save(saved, "JPEG", quality=quality)
    assert jpeg_quality(saved.getvalue()) == quality
    assert jpeg_quality(jpeg(image, quality)) == quality


def test_a_png_or_damaged_header_has_no_jpeg_quality_and_mostly_lossless_images_none():
    image = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    assert jpeg_quality(png(image)) is None
    assert jpeg_quality(jpeg(image, 75)[:20]) is None  # cut inside the tables
    assert jpeg_quality(b"\xff\xd8\xff\xdb\x00") is None
    assert typical_jpeg_quality([jpeg(image, 75), jpeg(image, 75), jpeg(image, 90)]) == 75
    assert typical_jpeg_quality([jpeg(image, 75), png(image)]) is None
    assert typical_jpeg_quality([]) is None


def test_an_image_at_three_times_the_training_resolution_reaches_the_model_as_at_it():
    """Resolution parity (Touvron et al. 2019): the same scene photographed 3x sharper than
    the 200x150 training images becomes, with parity, nearly the same 224x224 input."""
    rng = np.random.default_rng(3)
    noise = rng.integers(0, 256, (450, 600, 3)).astype(np.uint8)
    scene = cv2.GaussianBlur(noise, (7, 7), 0)  # the sharp capture: detail at 600x450
    training_like = cv2.resize(scene, (200, 150), interpolation=cv2.INTER_AREA)
    config = PreprocessConfig(size=224)
    reference = preprocess_image(png(training_like), config).astype(float)
    with_parity = preprocess_image(png(scene), config, (600, 450), parity=ResolutionParity(200))
    without = preprocess_image(png(scene), config, (600, 450))
    parity_error = np.abs(with_parity - reference).mean()
    # Grey levels: 0.0 here (the full decode's area shrink, as the copy was made), 2.67 without.
    assert parity_error < 0.5
    assert np.abs(without - reference).mean() > 2
    # At or below the training resolution, parity changes nothing.
    assert np.array_equal(
        preprocess_image(png(training_like), config, parity=ResolutionParity(200, 75)),
        reference.astype(np.uint8),
    )


def test_parity_with_the_training_images_jpeg_quality_brings_a_sharp_capture_nearer_them():
    """Training copies saved as JPEG lost detail that a sharp capture keeps even after the
    shrink; saving the shrunk capture at their quality takes that detail out too."""
    rng = np.random.default_rng(4)
    scene = cv2.GaussianBlur(rng.integers(0, 256, (450, 600, 3)).astype(np.uint8), (5, 5), 0)
    training_copy = jpeg(cv2.resize(scene, (200, 150), interpolation=cv2.INTER_AREA), 40)
    assert jpeg_quality(training_copy) == 40
    config = PreprocessConfig(size=224)
    reference = preprocess_image(training_copy, config).astype(float)

    def error(parity: ResolutionParity) -> float:
        return float(
            np.abs(preprocess_image(png(scene), config, None, parity=parity) - reference).mean()
        )

    resolution_only, with_quality = error(ResolutionParity(200)), error(ResolutionParity(200, 40))
    assert with_quality < 0.05 * resolution_only  # 0.0 and 9.5 grey levels here


def test_an_image_that_parity_shrinks_is_decoded_in_full_not_reduced():
    """The area shrink from the full decode comes nearer the training copies than from
    libjpeg's reduced decode; images that parity leaves alone still take the reduced one."""
    rng = np.random.default_rng(5)
    scene = jpeg(cv2.GaussianBlur(rng.integers(0, 256, (450, 600, 3)).astype(np.uint8), (5, 5), 0))
    reduced, full = PreprocessConfig(size=64), PreprocessConfig(size=64, reduced_decode=False)
    parity = ResolutionParity(200, 75)
    assert parity.shrinks((600, 450)) and not parity.shrinks((200, 150))
    assert not NO_PARITY.shrinks((600, 450)) and not parity.shrinks(None)
    assert np.array_equal(
        preprocess_image(scene, reduced, (600, 450), parity=parity),
        preprocess_image(scene, full, (600, 450), parity=parity),
    )
    at_training_size = ResolutionParity(600, 75)
    assert not np.array_equal(
        preprocess_image(scene, reduced, (600, 450), parity=at_training_size),
        preprocess_image(scene, full, (600, 450), parity=at_training_size),
    )
