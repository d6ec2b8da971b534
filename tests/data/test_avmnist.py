"""AudioVisionMNIST readers on small files written in the real formats (IDX, FSDD wav)."""

from __future__ import annotations

import math
import re
import shutil

import numpy as np
import pytest
import torch
from avmnist_fixture import write_idx, write_wav

from mce.data.audio import mfcc, read_wav, resample
from mce.data.avmnist import clip_features, load_avmnist, read_idx
from mce.tasks.avmnist import TASK


@pytest.fixture
def avmnist_dir(tmp_path):
    rng = np.random.default_rng(0)
    mnist = tmp_path / "mnist"
    mnist.mkdir()
    labels = np.repeat(np.arange(10, dtype=np.uint8), 6)
    images = rng.integers(0, 256, (60, 28, 28), dtype=np.uint8)
    images[:, 0, 0] = labels  # so the pairing can be checked
    write_idx(mnist / "train-images-idx3-ubyte.gz", images, compress=True)
    write_idx(mnist / "train-labels-idx1-ubyte", labels)
    recordings = tmp_path / "fsdd" / "recordings"
    recordings.mkdir(parents=True)
    for digit in range(10):
        for speaker in ("jackson", "nicolas"):
            for index in range(2):
                write_wav(recordings / f"{digit}_{speaker}_{index}.wav", digit)
    (recordings / "README.txt").write_text("not a recording")
    return tmp_path


def test_load_pairs_images_and_clips_of_the_same_digit(avmnist_dir):
    data = load_avmnist(avmnist_dir, num_pairs=30)
    assert len(data) == 30
    assert data.inputs["image"].shape == (30, 1, 28, 28)
    assert data.inputs["audio"].shape == (30, 1, 20, 20)
    assert torch.equal((data.inputs["image"][:, 0, 0, 0] * 255).round().long(), data.target)


def test_a_44_1_khz_wav_gives_the_8_khz_features(tmp_path):
    """Each clip written at 8 kHz and at 44.1 kHz: the 44.1 kHz copy is resampled, so its MFCCs
    are those of the 8 kHz file (unresampled they differ by 30-75 %)."""
    for digit in (0, 4, 9):
        low, high = tmp_path / f"{digit}_8k.wav", tmp_path / f"{digit}_44k.wav"
        write_wav(low, digit, rate=8000)
        write_wav(high, digit, rate=44100)
        assert read_wav(high)[1] == 44100
        expected, got = clip_features(low), clip_features(high)
        assert got.shape == expected.shape == (20, 20)
        assert float((got - expected).norm() / expected.norm()) < 0.03, digit


def test_load_resamples_recordings_at_another_rate(avmnist_dir, tmp_path):
    recordings = avmnist_dir / "fsdd" / "recordings"
    other = tmp_path / "other"
    shutil.copytree(avmnist_dir / "mnist", other / "mnist")
    (other / "fsdd" / "recordings").mkdir(parents=True)
    for path in recordings.glob("*.wav"):
        digit = int(path.name[0])
        write_wav(other / "fsdd" / "recordings" / path.name, digit, rate=44100)
    expected = load_avmnist(avmnist_dir, num_pairs=30)
    got = load_avmnist(other, num_pairs=30)
    assert torch.equal(got.target, expected.target)
    a, b = got.inputs["audio"], expected.inputs["audio"]
    assert float(((a - b).flatten(1).norm(dim=1) / b.flatten(1).norm(dim=1)).max()) < 0.03


def test_task_splits_70_30_and_trains(avmnist_dir, tmp_path):
    train, test = TASK.load(avmnist_dir)
    assert (len(train), len(test)) == (28, 12)
    model = TASK.build_model()
    out = model(train.inputs, train.present)
    assert out.shape == (28, 10)


def test_idx_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        read_idx(tmp_path / "missing")
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="no valid IDX magic"):
        read_idx(bad)
    truncated = tmp_path / "truncated"
    write_idx(truncated, np.zeros((3, 4), dtype=np.uint8))
    truncated.write_bytes(truncated.read_bytes()[:-2])
    with pytest.raises(ValueError, match="holds 10 data bytes"):
        read_idx(truncated)


def test_images_of_another_type_than_bytes_are_refused_naming_the_file(avmnist_dir):
    images = avmnist_dir / "mnist" / "train-images-idx3-ubyte.gz"
    floats = np.random.default_rng(0).random((60, 28, 28)).astype(">f4")  # already in [0, 1]
    write_idx(images, floats, compress=True)
    with pytest.raises(ValueError, match=f"IDX file {re.escape(str(images))} holds >f4 values"):
        load_avmnist(avmnist_dir, num_pairs=30)


def test_missing_folders_are_named(tmp_path):
    with pytest.raises(ValueError, match="train-images-idx3-ubyte"):
        load_avmnist(tmp_path)


def test_wav_errors_and_features(tmp_path):
    path = tmp_path / "0_x_0.wav"
    write_wav(path, 3)
    waveform, rate = read_wav(path)
    assert rate == 8000 and waveform.shape == (2400,) and waveform.abs().max() <= 1
    assert mfcc(waveform, rate).shape == (20, 20)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF0000WAVEjunk")
    with pytest.raises(ValueError, match="not a readable PCM wav"):
        read_wav(corrupt)
    with pytest.raises(ValueError, match="does not exist"):
        read_wav(tmp_path / "nothing.wav")


def test_truncated_wav_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "3_x_0.wav"
    write_wav(path, 3)  # 2,400 16-bit frames after a 44-byte header
    path.write_bytes(path.read_bytes()[: 44 + 1000])
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))} is truncated.* 2400 frames"):
        read_wav(path)


def test_resample_keeps_a_low_tone():
    rate, target = 22050, 8000
    t = torch.arange(rate) / rate
    tone = torch.sin(2 * math.pi * 440 * t)
    out = resample(tone, rate, target)
    assert abs(out.shape[0] - target) <= 1
    expected = torch.sin(2 * math.pi * 440 * torch.arange(out.shape[0]) / target)
    torch.testing.assert_close(out[100:-100], expected[100:-100], atol=0.02, rtol=0)
