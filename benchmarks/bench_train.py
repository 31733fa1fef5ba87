"""Training throughput: nclab's Fabric loop vs a minimal plain PyTorch loop, same run.

Same model (conv4 unless --backbone), same data (glyphs source train split), same batch size,
same optimiser, same work per epoch: the plain loop indexes pre-normalised in-memory tensors
with a random permutation and does forward / cross-entropy / backward / SGD step, then (as
nclab's loop does every epoch) measures accuracy on the held-out source-test split. nclab's time
is the sum of its per-epoch ``seconds``.
Repeats alternate the two and report medians and the ratio.

    python benchmarks/bench_train.py [--epochs 2] [--repeats 3] [--backbone conv4] [--augment]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from nclab.config import load_config
from nclab.data.prepare import prepare_data
from nclab.data.transforms import Preprocess
from nclab.models import create_model
from nclab.train.run import start_run


def plain_loop(images: np.ndarray, labels: np.ndarray, test_images: np.ndarray, test_labels: np.ndarray,
               backbone: str, batch: int, epochs: int, seed: int) -> float:
    torch.manual_seed(seed)
    pre = Preprocess.fit(images)
    x_all, x_test = pre(images), pre(test_images)
    y_all, y_test = torch.as_tensor(labels), torch.as_tensor(test_labels)
    model = create_model(backbone, in_channels=1, n_classes=int(labels.max()) + 1, image_size=images.shape[1])
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    model.train()
    t = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(len(y_all))
        for i in range(len(y_all) // batch):
            idx = perm[i * batch:(i + 1) * batch]
            loss = torch.nn.functional.cross_entropy(model(x_all[idx]), y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            _ = sum(int((model(x_test[i:i + 512]).argmax(1) == y_test[i:i + 512]).sum())
                          for i in range(0, len(y_test), 512))
        model.train()
    return time.perf_counter() - t


def nclab_loop(backbone: str, batch: int, epochs: int, augment: bool, out: Path) -> tuple[float, float]:
    t = time.perf_counter()
    run = start_run(None, [f"model.backbone={backbone}", f"train.batch_size={batch}", f"train.epochs={epochs}",
                           f"data.augment={str(augment).lower()}", "trainer.progress=false", "optim.lr=0.05",
                           "schedule.name=constant"], out=out)
    wall = time.perf_counter() - t
    return sum(r["seconds"] for r in run.records()), wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="conv4")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--augment", action="store_true", help="nclab with its shift augmentation (plain loop has none)")
    args = ap.parse_args()
    cfg = load_config(None, [])
    splits = prepare_data(cfg.data).splits
    train, test = splits["train"], splits["test"]
    n_img = (len(train) // args.batch) * args.batch * args.epochs
    print(f"{args.backbone}, glyphs source train: {len(train)} images x {args.epochs} epochs, batch {args.batch}, "
          f"{torch.get_num_threads()} threads")
    plain, ours, walls = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            plain.append(plain_loop(train.images, train.labels, test.images, test.labels, args.backbone, args.batch, args.epochs, r))
            t, w = nclab_loop(args.backbone, args.batch, args.epochs, args.augment, Path(tmp) / f"run{r}")
            ours.append(t)
            walls.append(w)
            print(f"  repeat {r}: plain {n_img / plain[-1]:.0f} img/s, nclab {n_img / ours[-1]:.0f} img/s "
                  f"(end-to-end incl. start-up {w:.1f} s)")
    ratios = [p / o for p, o in zip(plain, ours)]
    print(f"median: plain {n_img / statistics.median(plain):.0f} img/s, nclab {n_img / statistics.median(ours):.0f} img/s, "
          f"nclab / plain throughput = {statistics.median(ratios):.3f} (per-repeat {', '.join(f'{x:.3f}' for x in ratios)})")


if __name__ == "__main__":
    main()
