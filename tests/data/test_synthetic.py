"""Synthetic CIFAR-shaped images: seeded, balanced, in range, and separable by class (but not trivially)."""

import numpy as np

from kernelscope.data.synthetic import class_prototypes, synthetic_images


def test_same_seed_same_bytes_and_balanced_labels_in_range():
    x, y = synthetic_images(300, seed=4)
    again, y_again = synthetic_images(300, seed=4)
    assert x.tobytes() == again.tobytes() and np.array_equal(y, y_again)
    assert not np.array_equal(synthetic_images(300, seed=5)[0], x)
    assert x.shape == (300, 3 * 32 * 32) and x.dtype == np.float32 and 0.0 <= x.min() and x.max() <= 1.0
    assert np.bincount(y).tolist() == [30] * 10


def test_classes_are_separable_by_nearest_prototype_and_samples_vary():
    n_classes, shape = 5, (3, 16, 16)
    x, y = synthetic_images(500, n_classes, shape, seed=0, noise=0.25)
    protos = class_prototypes(n_classes, shape, np.random.default_rng(0))

    # Samples are circularly shifted prototypes: the Fourier amplitudes per channel do not see the shift.
    def amplitudes(images: np.ndarray) -> np.ndarray:
        return np.abs(np.fft.fft2(images.reshape(len(images), *shape))).reshape(len(images), -1)

    distances = ((amplitudes(x)[:, None, :] - amplitudes(protos)[None]) ** 2).sum(2)  # (n, n_classes)
    accuracy = float((distances.argmin(1) == y).mean())
    assert accuracy > 0.9  # class structure a network can learn
    same_class = x[y == 0]
    assert np.abs(same_class[0] - same_class[1]).mean() > 0.1  # not copies of one image


def test_synthetic_images_as_a_data_source_are_seeded_images_of_the_asked_shape():
    from kernelscope.core.param_sources import DataSourceParams
    from kernelscope.data.readers import read_source

    spec = DataSourceParams(format="synthetic_images", synthetic_samples=100, n_classes=4, image_shape=(3, 8, 8))
    a, again, other = read_source(spec, seed=2), read_source(spec, seed=2), read_source(spec, seed=3)
    assert a.x.shape == (100, 192) and a.image_shape == (3, 8, 8) and a.n_classes == 4
    assert np.bincount(a.y).tolist() == [25] * 4 and a.class_names == ("0", "1", "2", "3")
    assert np.array_equal(a.x, again.x) and not np.array_equal(a.x, other.x)
    default = read_source(DataSourceParams(format="synthetic_images", synthetic_samples=20), seed=0)
    assert default.image_shape == (3, 32, 32) and default.n_classes == 10
