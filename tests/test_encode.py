"""encode_file: a saved encoder applied to a data file gives the same codes as transform, with clear errors."""
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.datasets import load_digits

from stacked_ae.core.data import DataNotFoundError
from stacked_ae.core.model import StackedEncoder
from stacked_ae.encode import decode_codes, encode_file, encode_layers
from stacked_ae.estimators import StackedAutoencoderTransformer


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """(transformer fitted on digits/16, its encoder saved to a file, the digits it was fitted on)."""
    X = (load_digits().data / 16.0)[:400]
    tr = StackedAutoencoderTransformer(sizes=(16, 8), epochs=1, random_state=0).fit(X)
    path = tr.encoder_.save(tmp_path_factory.mktemp("model") / "encoder.pt")
    return tr, path, X


def _write(X, y, path):
    """Write features (and labels, where the format holds them) in the format named by the suffix."""
    if path.suffix == ".npy":
        np.save(path, X)
    elif path.suffix == ".npz":
        np.savez(path, X=X, y=y)
    else:
        frame = pd.DataFrame(X, columns=[f"px{j}" for j in range(X.shape[1])]).assign(label=y)
        frame.to_csv(path, index=False) if path.suffix == ".csv" else frame.to_parquet(path)
    return path


@pytest.mark.parametrize("suffix", [".npy", ".npz", ".csv", ".parquet"])
def test_encode_file_equals_transform(suffix, fitted, tmp_path):
    """Codes written to .npy from every input format equal transform on the same data."""
    tr, model, X = fitted
    source = _write(X, np.arange(len(X)) % 10, tmp_path / f"data{suffix}")
    out = encode_file(model, source, tmp_path / "codes.npy", batch_size=64, progress=False)
    codes = np.load(out)
    assert codes.shape == (len(X), 8)
    np.testing.assert_array_equal(codes, tr.transform(X))


def test_parquet_output_has_code_columns_and_labels(fitted, tmp_path):
    """Parquet output holds columns code_0..code_7 equal to transform, plus the input's label column."""
    tr, model, X = fitted
    y = np.array(["a", "b"])[np.arange(len(X)) % 2]
    source = _write(X, y, tmp_path / "data.csv")
    frame = pd.read_parquet(encode_file(model, source, tmp_path / "out" / "codes.parquet", progress=False))
    assert list(frame.columns) == [f"code_{j}" for j in range(8)] + ["label"]
    np.testing.assert_array_equal(frame.filter(like="code_").to_numpy(), tr.transform(X))
    assert list(frame["label"]) == list(y)


def test_small_batches_match_one_batch(fitted, tmp_path):
    """Encoding in batches of 7 gives the codes of one big batch (to float32 rounding)."""
    tr, model, X = fitted
    source = _write(X, None, tmp_path / "data.npy")
    small = np.load(encode_file(model, source, tmp_path / "a.npy", batch_size=7, progress=True))
    whole = np.load(encode_file(tr.encoder_, source, tmp_path / "b.npy", batch_size=len(X), progress=False))
    np.testing.assert_allclose(small, whole, rtol=0, atol=1e-6)


def test_wrong_feature_count_names_the_file(fitted, tmp_path):
    """A table with the wrong number of columns is refused; the message names the file and both counts."""
    _, model, X = fitted
    source = _write(X[:, :60], np.zeros(len(X)), tmp_path / "narrow.csv")
    with pytest.raises(ValueError, match=r"narrow\.csv: has 60 feature columns but the encoder expects 64"):
        encode_file(model, source, tmp_path / "codes.npy", progress=False)
    assert not (tmp_path / "codes.npy").exists()


@pytest.mark.parametrize("content, message", [
    (np.zeros(64), r"bad\.npy: expected a 2-D feature table"),
    (np.full((3, 64), np.nan), r"bad\.npy contains 192 NaN or infinite values"),
])
def test_bad_table_names_the_file(content, message, fitted, tmp_path):
    """1-D or non-finite input gives a ValueError that names the input file."""
    np.save(tmp_path / "bad.npy", content)
    with pytest.raises(ValueError, match=message):
        encode_file(fitted[1], tmp_path / "bad.npy", tmp_path / "codes.npy", progress=False)


def test_unsupported_output_and_missing_input_are_named(fitted, tmp_path):
    """An output suffix other than .npy/.parquet, or a missing input, is refused before any work."""
    with pytest.raises(ValueError, match=r"codes\.csv: unsupported output type '\.csv'"):
        encode_file(fitted[1], tmp_path / "x.npy", tmp_path / "codes.csv")
    with pytest.raises(DataNotFoundError, match=r"missing\.npy: no such file"):
        encode_file(fitted[1], tmp_path / "missing.npy", tmp_path / "codes.npy")


def test_out_of_range_data_warns_for_a_sigmoid_encoder(fitted, tmp_path):
    """Unscaled data (pixels 0..16) for an encoder trained on [0, 1] draws a warning naming the file."""
    tr, model, X = fitted
    source = _write(X * 16, None, tmp_path / "raw.npy")
    with pytest.warns(UserWarning, match=r"raw\.npy: features range over \[0, 16\]"):
        encode_file(model, source, tmp_path / "codes.npy", progress=False)


def test_all_layers_and_decoding(fitted):
    """encode_layers("all") stacks each layer's codes; decode_codes maps top codes back to the input width."""
    _, model, X = fitted
    encoder = StackedEncoder.load(model)
    codes = encode_layers(encoder, X, "all")
    assert codes.shape == (len(X), 16 + 8)
    torch.testing.assert_close(codes[:, 16:], encode_layers(encoder, X, "top"), rtol=0, atol=0)
    recon = decode_codes(encoder, codes[:, 16:])
    assert recon.shape == (len(X), 64) and 0 <= recon.min() and recon.max() <= 1   # sigmoid output
    with pytest.raises(ValueError, match="output must be 'top', 'all' or a layer number in 1..2"):
        encode_layers(encoder, X, 0)


def test_encode_file_reads_images_as_load_dataset_does(fitted, tmp_path):
    """An .npz of images (n, 8, 8), which load_dataset takes, is encoded row by row as its flattened pixels; a conv
    encoder refuses images of another shape, naming the file and both shapes."""
    tr, model, X = fitted
    np.savez(tmp_path / "images.npz", X=X.reshape(-1, 8, 8), y=np.arange(len(X)) % 10)
    codes = np.load(encode_file(model, tmp_path / "images.npz", tmp_path / "codes.npy", progress=False))
    np.testing.assert_array_equal(codes, tr.transform(X))
    conv = StackedEncoder.random(64, [4], seed=0, conv=[{"channels": 2}], image_shape=(8, 8))
    np.savez(tmp_path / "wide.npz", X=X.reshape(-1, 4, 16), y=np.arange(len(X)) % 10)
    with pytest.raises(ValueError, match=r"wide\.npz: holds images of shape \(4, 16\) but the encoder reads images "
                                         r"of shape \(1, 8, 8\)"):
        encode_file(conv, tmp_path / "wide.npz", tmp_path / "codes.npy", progress=False)
