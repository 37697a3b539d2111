"""Remove clouds from a real scene with imported weights.

The published DSen2-CR weights are a Keras HDF5 file (``model_SARcarl.hdf5``, see docs/weights.md). This example
has no network access, so it first writes a stand-in for the downloaded file: a Keras 2.2 whole-model HDF5 in
exactly the published layout (``model_weights/conv2d_1/conv2d_1/kernel:0``, HWIO kernels, ``layer_names``),
filled with the bundled demo weights. Then it does what you do with the real file: import it with the public API
(h5py, no TensorFlow, nothing unpickled), save it as an xcloudfree checkpoint, and remove the clouds of a real
SEN12MS-CR triplet (S2 + S1, a 128 px crop) with ``keep_clear`` on, writing a quicklook PNG.

    python examples/import_weights.py [--out DIR] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np

import xcloudfree as xcf
from xcloudfree.plot import quicklook, rgb

ROOT = Path(__file__).resolve().parents[1]


def write_published_layout(model, path: Path) -> Path:
    """A DSen2-CR Keras HDF5 file as ameraner/dsen2-cr's ModelCheckpoint writes it (weights of ``model``)."""
    import h5py

    blocks = model.hparams["blocks"]
    ours = ["head.0"] + [f"blocks.{i}.body.{j}" for i in range(blocks) for j in (0, 3)] + ["tail"]
    state = model.state_dict()
    layers = ["input_1", "input_2", "concatenate_1"]
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"], f.attrs["backend"] = b"2.2.4", b"tensorflow"
        group = f.create_group("model_weights")
        for layer in layers:  # inputs and the S1/S2 concatenation: no weights
            group.create_group(layer).attrs["weight_names"] = np.array([], dtype="S1")
        for i, name in enumerate(ours, start=1):
            layer = f"conv2d_{i}"
            layers.append(layer)
            g = group.create_group(layer)
            g.attrs["weight_names"] = np.array([f"{layer}/kernel:0".encode(), f"{layer}/bias:0".encode()])
            g.create_dataset(f"{layer}/kernel:0", data=state[f"{name}.weight"].numpy().transpose(2, 3, 1, 0))
            g.create_dataset(f"{layer}/bias:0", data=state[f"{name}.bias"].numpy())
        for layer in ("add_1", "concatenate_2", "lambda_1"):  # long skip and cloud-mask output: no weights
            layers.append(layer)
            group.create_group(layer).attrs["weight_names"] = np.array([], dtype="S1")
        group.attrs["layer_names"] = np.array([n.encode() for n in layers])
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("examples_output/import_weights"))
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    demo = xcf.models.load(ROOT / "xcloudfree" / "weights" / "dsen2cr_synthetic.safetensors")
    downloaded = write_published_layout(demo, args.out / "model_SARcarl.hdf5")  # stands in for the download

    # What you run on the real download (or: xcloudfree import-weights FILE --arch dsen2cr --out M.safetensors).
    model = xcf.models.import_weights(downloaded, arch="dsen2cr")
    checkpoint = xcf.models.save(model, args.out / "dsen2cr_imported.safetensors", metadata=model.metadata)
    print(f"imported {model.hparams} from {downloaded.name}, saved {checkpoint}")

    with warnings.catch_warnings():  # the index names the incomplete samples it skips: expected here
        warnings.simplefilter("ignore", UserWarning)
        index = xcf.io.SEN12MSCR(args.data / "sen12mscr", seasons=["fall"])  # triplets: S1 + cloudy + clear
    scene = index[0].isel(y=slice(64, 192), x=slice(0, 128)).load()  # 128 × 128 px of the 256 px patch: quick
    out = scene.cloudfree.remove(checkpoint, tile=128, device="cpu")  # keep_clear: clear pixels stay observed
    scores = out.cloudfree.evaluate(target="s2_clear", mask=out["mask"] >= 0.5)
    cloudy = out.cloudfree.evaluate(target="s2_clear", prediction="s2", mask=out["mask"] >= 0.5)
    print(
        f"{index.samples[0].name}: cloud cover {float(out['mask'].mean()):.0%}; PSNR inside the mask "
        f"{scores['psnr_reconstruction']:.2f} dB (cloudy input {cloudy['psnr_reconstruction']:.2f} dB)"
    )
    path = quicklook(
        {
            "cloudy (RGB)": rgb(scene["s2"]),
            "dsen2cr mask": out["mask"].values,
            "cloud-free, keep_clear (RGB)": rgb(out["s2_cloudfree"]),
            "clear target (RGB)": rgb(scene["s2_clear"]),
        },
        args.out / "quicklook.png",
    )
    print(f"quicklook: {path} ({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
