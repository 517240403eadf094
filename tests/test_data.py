"""kd.data: the readers (CIFAR pickles, Fashion-MNIST IDX files, digits), the missing-data
error, class-balanced subsets, the validation hold-out, and the device-resident Loader."""
import gzip
import pickle
import shutil
import struct

import numpy as np
import pytest
import torch

from kd import data
from kd.data import DatasetNotFoundError, Loader, balanced_subset


# ----------------------------------------------------------------------------- file writers

def _images(n, seed, channels=3, size=32):
    return np.random.default_rng(seed).integers(0, 256, (n, channels * size * size), dtype=np.uint8)


def write_cifar10(root, n_per_batch=20, n_test=30):
    """CIFAR-10 python layout: data_batch_1..5, test_batch, batches.meta (bytes keys, as
    pickle.load(..., encoding='bytes') returns them from the real files)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    out = {}
    for i, name in enumerate([f"data_batch_{b}" for b in range(1, 6)] + ["test_batch"]):
        n = n_test if name == "test_batch" else n_per_batch
        x = _images(n, seed=i)
        y = [(j + i) % 10 for j in range(n)]
        d = {b"batch_label": f"batch {i}".encode(), b"labels": y, b"data": x,
             b"filenames": [f"img_{i}_{j}.png".encode() for j in range(n)]}
        (folder / name).write_bytes(pickle.dumps(d, protocol=2))
        out[name] = (x, np.array(y))
    meta = {b"label_names": [f"class{c}".encode() for c in range(10)], b"num_cases_per_batch": n_per_batch,
            b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return out


def write_cifar100(root, n_train=300, n_test=200):
    """CIFAR-100 python layout: train, test, meta with fine and coarse labels."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    out = {}
    for i, (name, n) in enumerate((("train", n_train), ("test", n_test))):
        x = _images(n, seed=10 + i)
        fine = [j % 100 for j in range(n)]
        d = {b"filenames": [f"f{j}.png".encode() for j in range(n)], b"batch_label": name.encode(),
             b"fine_labels": fine, b"coarse_labels": [f // 5 for f in fine], b"data": x}
        (folder / name).write_bytes(pickle.dumps(d, protocol=2))
        out[name] = (x, np.array(fine))
    meta = {b"fine_label_names": [f"fine{c}".encode() for c in range(100)],
            b"coarse_label_names": [f"coarse{c}".encode() for c in range(20)]}
    (folder / "meta").write_bytes(pickle.dumps(meta, protocol=2))
    return out


def _write_idx(path, array):
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def write_fashion(folder, n_train=50, n_test=20):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    out = {}
    for split, n, (img_name, lbl_name) in (("train", n_train, data.FASHION_FILES["train"]),
                                          ("test", n_test, data.FASHION_FILES["test"])):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, n, dtype=np.uint8)
        y[:10] = np.arange(10)
        _write_idx(folder / img_name, x)
        _write_idx(folder / lbl_name, y)
        out[split] = (x, y)
    return out


@pytest.fixture
def no_system_data(tmp_path, monkeypatch):
    """Hide data/ and the Debian folder, so that only what a test writes can be found."""
    monkeypatch.setattr(data, "REPO_DATA", tmp_path / "no-repo-data")
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian")


# ----------------------------------------------------------------------------- readers

def test_cifar10_from_pickle_files(tmp_path, no_system_data):
    written = write_cifar10(tmp_path)
    ds = data.load("cifar10", tmp_path)
    assert ds.num_classes == 10 and ds.in_channels == 3 and ds.image_size == 32 and ds.eval_split == "test"
    assert ds.x_train.dtype == torch.uint8 and ds.y_train.dtype == torch.int64
    assert ds.x_train.shape == (100, 3, 32, 32) and ds.x_eval.shape == (30, 3, 32, 32)
    # training batches concatenated in order 1..5; rows are R (1024), G, B planes, row-major
    x_all = np.concatenate([written[f"data_batch_{b}"][0] for b in range(1, 6)])
    y_all = np.concatenate([written[f"data_batch_{b}"][1] for b in range(1, 6)])
    assert np.array_equal(ds.x_train.numpy().reshape(100, -1), x_all)
    assert np.array_equal(ds.y_train.numpy(), y_all)
    first = x_all[0]
    assert ds.x_train[0, 1, 2, 3].item() == first[1024 + 2 * 32 + 3]  # green plane, row 2, column 3
    assert np.array_equal(ds.x_eval.numpy().reshape(30, -1), written["test_batch"][0])
    assert np.array_equal(ds.y_eval.numpy(), written["test_batch"][1])
    assert ds.mean == data.info("cifar10").mean and ds.std == data.info("cifar10").std


def test_cifar100_from_pickle_files_uses_fine_labels(tmp_path, no_system_data):
    written = write_cifar100(tmp_path)
    ds = data.load("cifar100", tmp_path)
    assert ds.num_classes == 100
    assert ds.x_train.shape == (300, 3, 32, 32) and ds.x_eval.shape == (200, 3, 32, 32)
    assert np.array_equal(ds.x_train.numpy().reshape(300, -1), written["train"][0])
    assert np.array_equal(ds.y_train.numpy(), written["train"][1])  # fine, not coarse labels
    assert np.array_equal(ds.y_eval.numpy(), written["test"][1])


def test_class_count_is_the_datasets_not_the_largest_label(tmp_path, no_system_data):
    """A small file without the last classes still gives a 100-class dataset (the model and
    load_model must agree on the head's size)."""
    write_cifar100(tmp_path, n_train=150, n_test=50)  # test labels only 0..49
    ds = data.load("cifar100", tmp_path, eval_subset=20)
    assert ds.num_classes == 100


def test_fashion_mnist_from_idx_files(tmp_path, no_system_data):
    written = write_fashion(tmp_path / "fashion-mnist")
    ds = data.load("fashion_mnist", tmp_path)
    assert ds.x_train.shape == (50, 1, 28, 28) and ds.x_eval.shape == (20, 1, 28, 28)
    assert ds.num_classes == 10 and ds.in_channels == 1 and ds.image_size == 28
    assert np.array_equal(ds.x_train[:, 0].numpy(), written["train"][0])
    assert np.array_equal(ds.y_train.numpy(), written["train"][1])
    assert np.array_equal(ds.x_eval[:, 0].numpy(), written["test"][0])
    assert np.array_equal(ds.y_eval.numpy(), written["test"][1])


def test_fashion_mnist_is_read_once_per_process_and_handed_out_as_copies(tmp_path, no_system_data):
    written = write_fashion(tmp_path / "fashion-mnist")
    first = data.load("fashion_mnist", tmp_path)
    first.x_train.zero_(), first.y_eval.zero_()  # a caller that changes its dataset in place
    hits = data._read_fashion_folder.cache_info().hits
    again = data.load("fashion_mnist", tmp_path)
    assert data._read_fashion_folder.cache_info().hits == hits + 1  # not decompressed again
    assert np.array_equal(again.x_train[:, 0].numpy(), written["train"][0])
    assert np.array_equal(again.y_eval.numpy(), written["test"][1])
    # a rewritten file (another size or time) is read again, not served from the cache
    shutil.rmtree(tmp_path / "fashion-mnist")
    rewritten = write_fashion(tmp_path / "fashion-mnist", n_train=60)
    assert np.array_equal(data.load("fashion_mnist", tmp_path).x_train[:, 0].numpy(), rewritten["train"][0])


def test_fashion_mnist_found_where_a_torchvision_download_leaves_it(tmp_path, no_system_data):
    write_fashion(tmp_path / "FashionMNIST" / "raw")
    assert len(data.load("fashion_mnist", tmp_path).y_train) == 50


def test_idx_reader_rejects_non_byte_data(tmp_path):
    path = tmp_path / "bad.gz"
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">HBB", 0, 0x0D, 1) + struct.pack(">I", 1) + b"\0\0\0\0")
    with pytest.raises(ValueError, match="unsigned-byte"):
        data._read_idx(path)


@pytest.mark.skipif(not data.DEBIAN_FASHION_MNIST.exists(), reason="Debian's dataset-fashion-mnist not installed")
def test_real_fashion_mnist_files():
    ds = data.load("fashion_mnist")
    assert ds.x_train.shape == (60000, 1, 28, 28) and ds.x_eval.shape == (10000, 1, 28, 28)
    assert torch.bincount(ds.y_train).tolist() == [6000] * 10
    assert torch.bincount(ds.y_eval).tolist() == [1000] * 10
    x = ds.x_train.float() / 255
    assert x.mean().item() == pytest.approx(ds.mean[0], abs=1e-3)
    assert x.std().item() == pytest.approx(ds.std[0], abs=1e-3)


def test_fashion_pairs_hold_two_items_and_a_label_that_names_both(tmp_path, no_system_data):
    written = write_fashion(tmp_path / "fashion-mnist", n_train=200, n_test=100)
    ds = data.load("fashion_pairs", tmp_path)
    assert ds.num_classes == 100 and ds.in_channels == 2 and ds.x_train.shape[1:] == (2, 28, 28)
    assert len(ds.y_train) == data.PAIRS_PER_SPLIT["train"] and len(ds.y_eval) == data.PAIRS_PER_SPLIT["test"]
    assert torch.bincount(ds.y_train, minlength=100).tolist() == [600] * 100, "every class equally often"
    for split, x, y in (("train", ds.x_train, ds.y_train), ("test", ds.x_eval, ds.y_eval)):
        images, labels = written[split]
        # each channel is an item of its split (never of the other), of the class the label names
        lookup = {im.tobytes(): int(lb) for im, lb in zip(images, labels)}
        for i in range(0, len(y), 997):
            a, b = lookup[x[i, 0].numpy().tobytes()], lookup[x[i, 1].numpy().tobytes()]
            assert int(y[i]) == 10 * a + b
    again = data.load("fashion_pairs", tmp_path)
    assert torch.equal(again.x_train, ds.x_train) and torch.equal(again.y_eval, ds.y_eval), "a fixed pairing"
    sub = data.load("fashion_pairs", tmp_path, train_subset=300, seed=1)
    assert torch.bincount(sub.y_train, minlength=100).tolist() == [3] * 100


def test_views_add_other_images_of_the_sample_class_and_keep_the_samples():
    """kd.data.add_views (MFH's image analogue): view 0 is the dataset's own image, view 1 another image of
    its class (never itself), drawn once with a fixed seed; subsets and their order are those of views=None."""
    plain = data.load("digits", train_subset=200, eval_subset=100, seed=3)
    ds = data.load("digits", train_subset=200, eval_subset=100, seed=3, views=2)
    assert ds.x_train.shape[1] == 2 and ds.mean == plain.mean * 2 and ds.std == plain.std * 2
    assert torch.equal(ds.x_train[:, :1], plain.x_train) and torch.equal(ds.y_train, plain.y_train)
    assert torch.equal(ds.x_eval[:, :1], plain.x_eval) and torch.equal(ds.y_eval, plain.y_eval)
    full = data.load("digits")
    for x in (ds.x_train, ds.x_eval):
        assert not (x[:, 0] == x[:, 1]).flatten(1).all(1).any(), "the other image is never the sample's own"
    images = data.add_views(full.x_train, full.y_train, 3, seed=7)
    assert images.shape[1] == 3 and torch.equal(images, data.add_views(full.x_train, full.y_train, 3, seed=7))
    lookup = {bytes(im.flatten().numpy()): int(lb) for im, lb in zip(full.x_train, full.y_train)}
    for i in range(0, len(full.y_train), 101):
        assert {lookup[bytes(images[i, v].flatten().numpy())] for v in (1, 2)} == {int(full.y_train[i])}
    for bad in (1, 0, True, 2.0):
        with pytest.raises(ValueError, match="views must be an integer >= 2"):
            data.add_views(full.x_train, full.y_train, bad, seed=0)
    with pytest.raises(ValueError, match="at least 2 images of every class"):
        data.add_views(full.x_train[:3], torch.tensor([0, 1, 1]), 2, seed=0)


def test_class_similarity():
    pairs = data.class_similarity("fashion_pairs")
    assert pairs.shape == (100, 100) and torch.equal(pairs, pairs.T) and (pairs.diagonal() == 1).all()
    assert pairs[23, 27] == 0.5 and pairs[23, 73] == 0.5 and pairs[23, 32] == 0 and pairs[23, 45] == 0
    assert int((pairs[0] == 0.5).sum()) == 18
    fm = data.class_similarity("fashion_mnist")
    assert fm[0, 2] == 1 and fm[5, 9] == 1 and fm[0, 5] == 0 and fm[8, 8] == 1 and fm[8].sum() == 1
    assert data.class_similarity("cifar100") is None
    with pytest.raises(ValueError, match="unknown dataset 'nosuch'"):
        data.class_similarity("nosuch")


def test_one_table_of_dataset_facts():
    for name in data.DATASETS:
        facts = data.info(name)
        assert len(facts.mean) == len(facts.std) == facts.channels
    assert data.info("fashion_pairs").num_classes == 100
    with pytest.raises(ValueError, match="choose one of"):
        data.info("imagenet")


def test_similarity_mass():
    from kd.metrics import similarity_mass

    sim = data.class_similarity("fashion_mnist")
    target = torch.tensor([0, 5])
    # all non-target mass on similar classes (a top for a top, a shoe for a shoe)
    logits = torch.full((2, 10), -30.0)
    logits[0, 0], logits[0, 2], logits[1, 5], logits[1, 7] = 5.0, 4.0, 5.0, 4.0
    share, uniform = similarity_mass(logits, target, sim)
    assert share == pytest.approx(1.0) and uniform == pytest.approx((3 / 9 + 2 / 9) / 2)
    flat = torch.zeros(2, 10)
    flat[0, 0], flat[1, 5] = 3.0, 3.0  # the non-target mass spread evenly
    assert similarity_mass(flat, target, sim)[0] == pytest.approx(uniform)


def test_digits_split_and_normalisation_statistics():
    ds = data.load("digits")
    assert ds.x_train.shape == (1437, 1, 8, 8) and ds.x_eval.shape == (360, 1, 8, 8)
    assert ds.num_classes == 10 and ds.x_train.max() == 255
    x = ds.x_train.float() / 255  # the constants are the training split's statistics
    assert x.mean().item() == pytest.approx(ds.mean[0], abs=1e-3)
    assert x.std().item() == pytest.approx(ds.std[0], abs=1e-3)
    again = data.load("digits")
    assert torch.equal(ds.x_train, again.x_train) and torch.equal(ds.y_eval, again.y_eval)


# ----------------------------------------------------------------------------- missing data

@pytest.mark.parametrize("name, folder", [("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python")])
def test_missing_cifar_names_where_it_looked_and_the_command(tmp_path, no_system_data, name, folder):
    with pytest.raises(DatasetNotFoundError) as e:
        data.load(name, tmp_path)
    msg = str(e.value)
    assert str(tmp_path / folder) in msg
    assert f"python -m kd data {name} --root {tmp_path}" in msg
    assert isinstance(e.value, FileNotFoundError)


def test_incomplete_cifar_folder_is_missing_data_too(tmp_path, no_system_data):
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DatasetNotFoundError, match="cifar-10-batches-py"):
        data.load("cifar10", tmp_path)


def test_missing_fashion_mnist_names_every_folder_and_both_commands(tmp_path, no_system_data):
    with pytest.raises(DatasetNotFoundError) as e:
        data.load("fashion_mnist", tmp_path)
    msg = str(e.value)
    for folder in (tmp_path / "fashion-mnist", data.REPO_DATA / "fashion-mnist", data.DEBIAN_FASHION_MNIST):
        assert str(folder) in msg
    assert "apt-get install dataset-fashion-mnist" in msg
    assert f"python -m kd data fashion_mnist --root {tmp_path}" in msg


def test_the_command_in_the_message_fetches_the_data(tmp_path, no_system_data, monkeypatch, capsys):
    """`python -m kd data cifar100 --root DIR` (what the error tells the user) goes through
    the torchvision download; here the download is faked by writing the files."""
    from kd.__main__ import main

    calls = []

    def fake_download(cls_name, root, name):
        calls.append((cls_name, root))
        write_cifar100(root)
        return root / "cifar-100-python"

    monkeypatch.setattr(data, "_download_torchvision", fake_download)
    assert main(["data", "cifar100", "--root", str(tmp_path)]) == 0
    assert calls == [("CIFAR100", tmp_path)]
    assert '"num_classes": 100' in capsys.readouterr().out
    assert data.load("cifar100", tmp_path).x_train.shape[0] == 300  # now found without downloading


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown dataset 'mnist'"):
        data.load("mnist")
    with pytest.raises(ValueError, match="val_fraction"):
        data.load("digits", val_fraction=1.0)
    with pytest.raises(ValueError, match="train_subset"):
        data.load("digits", train_subset=0)


# ----------------------------------------------------------------------------- subsets

def test_balanced_subset_is_class_balanced_seeded_and_unique():
    labels = torch.arange(1000) % 10
    labels = labels[torch.randperm(1000, generator=torch.Generator().manual_seed(1))]
    a = balanced_subset(labels, 200, torch.Generator().manual_seed(0))
    b = balanced_subset(labels, 200, torch.Generator().manual_seed(0))
    c = balanced_subset(labels, 200, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert len(a.unique()) == 200 and torch.equal(a, a.sort().values)
    assert torch.bincount(labels[a], minlength=10).tolist() == [20] * 10
    odd = balanced_subset(labels, 25, torch.Generator().manual_seed(0))
    counts = torch.bincount(labels[odd], minlength=10)
    assert counts.sum() == 25 and counts.max() - counts.min() <= 1


def test_balanced_subset_with_unequal_classes_takes_what_there_is():
    labels = torch.tensor([0] * 50 + [1] * 3 + [2] * 47)
    idx = balanced_subset(labels, 30, torch.Generator().manual_seed(0))
    assert torch.bincount(labels[idx]).tolist() == [14, 3, 13] or \
        torch.bincount(labels[idx]).tolist() == [13, 3, 14]


def test_subsets_through_load():
    ds = data.load("digits", train_subset=200, eval_subset=100, seed=3)
    assert len(ds.y_train) == 200 and len(ds.y_eval) == 100
    assert torch.bincount(ds.y_train, minlength=10).tolist() == [20] * 10
    assert torch.bincount(ds.y_eval, minlength=10).tolist() == [10] * 10
    same = data.load("digits", train_subset=200, eval_subset=100, seed=3)
    other = data.load("digits", train_subset=200, eval_subset=100, seed=4)
    assert torch.equal(ds.x_train, same.x_train) and torch.equal(ds.x_eval, same.x_eval)
    assert not torch.equal(ds.x_train, other.x_train)


def _rows(x):
    return sorted(bytes(r) for r in x.flatten(1).numpy())


def test_validation_hold_out_is_disjoint_balanced_and_seeded():
    full = data.load("digits")
    ds = data.load("digits", val_fraction=0.2, seed=1)
    assert ds.eval_split == "val"
    assert len(ds.y_eval) == round(1437 * 0.2)
    counts = torch.bincount(ds.y_eval, minlength=10)
    assert counts.max() - counts.min() <= 1, "class-balanced"
    # train and validation partition the training split (as multisets of images: digits has
    # duplicate images), so the hold-out is disjoint from what is trained on and the test
    # split is never used
    assert _rows(torch.cat([ds.x_train, ds.x_eval])) == _rows(full.x_train)
    labels = sorted(torch.cat([ds.y_train, ds.y_eval]).tolist())
    assert labels == sorted(full.y_train.tolist())
    again = data.load("digits", val_fraction=0.2, seed=1)
    other = data.load("digits", val_fraction=0.2, seed=2)
    assert torch.equal(ds.x_eval, again.x_eval) and torch.equal(ds.x_train, again.x_train)
    assert not torch.equal(ds.x_eval, other.x_eval)
    sub = data.load("digits", val_fraction=0.2, train_subset=300, eval_subset=50, seed=1)
    assert len(sub.y_train) == 300 and len(sub.y_eval) == 50 and sub.eval_split == "val"
    assert set(_rows(sub.x_eval)) <= set(_rows(ds.x_eval))
    assert set(_rows(sub.x_train)) <= set(_rows(ds.x_train))


# ----------------------------------------------------------------------------- loader

def _toy(n=40, classes=4, size=8, channels=1):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, channels, size, size), generator=g, dtype=torch.uint8)
    y = torch.arange(n) % classes
    return x, y


def _collect(loader):
    return [(b.x.clone(), b.y.clone(), b.index.clone()) for b in loader]


def test_loader_is_deterministic_for_a_seed_and_permutes_every_epoch():
    x, y = _toy()
    kw = dict(batch_size=8, train=True, seed=5, crop_pad=2, flip=True, cutout=3, drop_last=False)
    a, b = Loader(x, y, (0.5,), (0.25,), **kw), Loader(x, y, (0.5,), (0.25,), **kw)
    epochs = []
    for e in range(3):
        a.set_epoch(e)
        b.set_epoch(e)
        ba, bb = _collect(a), _collect(b)
        assert all(torch.equal(u, v) for p, q in zip(ba, bb) for u, v in zip(p, q))
        order = torch.cat([idx for _, _, idx in ba])
        assert sorted(order.tolist()) == list(range(40)), "each epoch is a permutation of the split"
        epochs.append(order)
    assert not torch.equal(epochs[0], epochs[1]) and not torch.equal(epochs[1], epochs[2])
    c = Loader(x, y, (0.5,), (0.25,), **{**kw, "seed": 6})
    assert not torch.equal(torch.cat([i for _, _, i in _collect(c)]), epochs[0])


def test_loader_drop_last_and_eval_order():
    x, y = _toy(n=42)
    train = Loader(x, y, (0.5,), (0.25,), batch_size=8, train=True)
    assert len(train) == 5 and all(len(b.y) == 8 for b in train)
    assert len(torch.cat([b.index for b in train]).unique()) == 40
    ev = Loader(x, y, (0.5,), (0.25,), batch_size=8, train=False)
    assert len(ev) == 6
    assert torch.equal(torch.cat([b.index for b in ev]), torch.arange(42))


def test_batches_hold_the_samples_their_indices_name_normalised():
    x, y = _toy(channels=3)
    mean, std = (0.1, 0.5, 0.9), (0.2, 0.3, 0.4)
    loader = Loader(x, y, mean, std, batch_size=8, train=True, seed=1)
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    for b in loader:
        assert b.x.dtype == torch.float32 and b.index.dtype == torch.int64
        assert torch.equal(b.y, y[b.index])
        torch.testing.assert_close(b.x, (x[b.index].float() / 255 - m) / s)
    # normalised with the statistics of a split gives mean ~0, std ~1
    xs = torch.randint(0, 256, (500, 1, 4, 4), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    f = xs.float() / 255
    ev = Loader(xs, torch.zeros(500, dtype=torch.long), (f.mean().item(),), (f.std().item(),),
                batch_size=500, train=False)
    out = next(iter(ev)).x
    assert abs(out.mean().item()) < 1e-4 and out.std().item() == pytest.approx(1.0, abs=1e-4)


def test_random_crop_is_a_window_of_the_zero_padded_image():
    x, y = _toy(n=16, size=6)
    loader = Loader(x, y, (0.0,), (1 / 255,), batch_size=16, train=True, seed=2, crop_pad=2)
    b = next(iter(loader))
    assert b.x.shape == (16, 1, 6, 6)
    padded = torch.nn.functional.pad(x.float(), (2, 2, 2, 2))
    shifts_seen = set()
    for img, i in zip(b.x, b.index):
        matches = [(r, c) for r in range(5) for c in range(5)
                   if torch.equal(img, padded[i, :, r:r + 6, c:c + 6])]
        assert matches, "every crop is some window of the padded image"
        shifts_seen.update(matches)
    assert len(shifts_seen) > 3, "crops are at different offsets"
    # random_crop itself, with given shifts
    out = data.random_crop(x[:2].float(), 1, torch.tensor([[0, 2], [1, 0]]))
    torch.testing.assert_close(out[0], torch.nn.functional.pad(x[0].float(), (1, 1, 1, 1))[:, 0:6, 1:7])
    torch.testing.assert_close(out[1], torch.nn.functional.pad(x[1].float(), (1, 1, 1, 1))[:, 2:8, 0:6])


def test_flip_mirrors_about_half_of_the_images():
    x, y = _toy(n=64)
    b = next(iter(Loader(x, y, (0.0,), (1 / 255,), batch_size=64, train=True, seed=3, flip=True)))
    flipped = 0
    for img, i in zip(b.x, b.index):
        same, mirrored = torch.equal(img, x[i].float()), torch.equal(img, x[i].float().flip(2))
        assert same or mirrored
        flipped += mirrored and not same
    assert 16 < flipped < 48


def test_cutout_zeroes_one_square_per_image():
    x = torch.full((8, 1, 10, 10), 200, dtype=torch.uint8)
    b = next(iter(Loader(x, torch.zeros(8, dtype=torch.long), (0.0,), (1.0,), batch_size=8, train=True,
                         seed=0, cutout=4)))
    zeros = (b.x == 0).sum(dim=(1, 2, 3))
    assert ((zeros >= 4) & (zeros <= 16)).all(), "a 4x4 square, clipped at the border"


def test_eval_loader_does_not_augment():
    x, y = _toy()
    ev = Loader(x, y, (0.0,), (1 / 255,), batch_size=40, train=False, crop_pad=4, flip=True, cutout=4)
    torch.testing.assert_close(next(iter(ev)).x, x.float())


def test_same_class_batches_hold_same_class_groups():
    x, y = _toy(n=60, classes=5)
    loader = Loader(x, y, (0.5,), (0.25,), batch_size=12, train=True, seed=0, same_class=3)
    assert loader.anchors_per_batch == 3 and len(loader) == 5
    anchors = []
    for epoch in range(2):
        loader.set_epoch(epoch)
        for b in loader:
            assert len(b.y) == 12
            groups = b.index.view(3, 4)
            assert (y[groups] == y[groups[:, :1]]).all(), "every anchor brings samples of its class"
            assert (groups[:, 1:] != groups[:, :1]).all(), "never the anchor itself"
            assert all(len(set(g[1:].tolist())) == 3 for g in groups), "extras drawn without replacement"
            assert torch.equal(b.y, y[b.index])
            anchors += groups[:, 0].tolist()
    assert len(set(anchors[:15])) == 15, "anchors within an epoch are distinct samples"
    with pytest.raises(ValueError, match="multiple of 1 \\+ same_class"):
        Loader(x, y, (0.5,), (0.25,), batch_size=10, train=True, same_class=3)
    with pytest.raises(ValueError, match="at least 2 samples"):
        Loader(x[:6], torch.tensor([0, 0, 1, 1, 2, 3]), (0.5,), (0.25,), batch_size=4, train=True, same_class=1)



def test_every_anchor_makes_every_image_an_anchor_once_per_epoch():
    """BAKE's official sampler: batch-size anchors plus their same-class samples, every image an
    anchor once per epoch (1 + M times the images of a plain epoch); too small a class wraps."""
    x, y = _toy(n=60, classes=5)
    loader = Loader(x, y, (0.5,), (0.25,), batch_size=12, train=True, seed=0, same_class=3, every_anchor=True)
    assert len(loader) == 20
    anchors = [a for b in loader for a in b.index.view(-1, 4)[:, 0].tolist()]
    assert sorted(anchors) == list(range(60))
    small = Loader(x[:8], torch.tensor([0, 0, 1, 1, 1, 1, 1, 1]), (0.5,), (0.25,), batch_size=8, train=True,
                   same_class=3, every_anchor=True)
    for b in small:
        groups = b.index.view(-1, 4)
        assert (small.y[groups] == small.y[groups[:, :1]]).all()
        assert (groups[:, 1:] != groups[:, :1]).all()

@pytest.mark.parametrize("same_class", [0, 1])
def test_shards_split_the_global_batch_and_its_augmentation(same_class):
    """Data parallel: the processes' shares, put together, are exactly one process's batch,
    augmentation included, and same-class groups stay on one process."""
    x, y = _toy(n=64, classes=4)
    kw = dict(batch_size=16, train=True, seed=4, crop_pad=2, flip=True, cutout=2, same_class=same_class)
    one = Loader(x, y, (0.5,), (0.25,), **kw)
    parts = [Loader(x, y, (0.5,), (0.25,), shard=(r, 2), **kw) for r in range(2)]
    for epoch in (0, 1):
        for loader in (one, *parts):
            loader.set_epoch(epoch)
        assert len(parts[0]) == len(parts[1]) == len(one)
        for full, b0, b1 in zip(one, *parts):
            assert len(b0.y) == len(b1.y) == 8
            assert torch.equal(torch.cat([b0.index, b1.index]), full.index)
            assert torch.equal(torch.cat([b0.x, b1.x]), full.x)
            if same_class:
                for b in (b0, b1):
                    pairs = b.index.view(-1, 2)
                    assert (y[pairs[:, 0]] == y[pairs[:, 1]]).all()
    with pytest.raises(ValueError, match="number of processes"):
        Loader(x, y, (0.5,), (0.25,), batch_size=15, train=True, shard=(0, 2))
    with pytest.raises(ValueError, match="same_class"):
        Loader(x, y, (0.5,), (0.25,), batch_size=12, train=True, same_class=3, shard=(0, 2))


def test_loader_rejects_bad_batch_size():
    x, y = _toy()
    with pytest.raises(ValueError, match="batch_size"):
        Loader(x, y, (0.5,), (0.25,), batch_size=0, train=True)
