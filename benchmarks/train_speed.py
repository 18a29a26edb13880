"""Training speed: aelab against the Keras tutorial, side by side in one run.

    python benchmarks/train_speed.py --epochs 4 [--threads 1] [--batch-size 32] [--limit N]

The tutorial's denoising model on Fashion-MNIST (batch 32, Adam 1e-3, MSE, validation on
the test set each epoch). Epochs alternate A B A B ...: one aelab epoch (inside aelab's own
fit loop, via its epoch callback), then one Keras ``fit`` epoch, so both see the same
machine load. Per epoch it records CPU seconds (``time.process_time``, all threads of the
process) and wall seconds, the validation MSE and the test PSNR at noise 0.2
(docs/protocols.md: fixed evaluation noise, seed 0), and prints a table with the medians over
epochs 2..E and the ratios. Keras needs TensorFlow (the ``bench`` extra); without it the
aelab rows are printed alone, with a note.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time


def _median(values):
    values = values[1:] if len(values) > 1 else values
    return statistics.median(values)


def keras_reference(threads: int, seed: int = 0):
    """The tutorial's model in Keras 3 (TensorFlow backend), or None when TensorFlow is missing."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        import tensorflow as tf
    except ImportError:
        return None
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    from tensorflow.keras import layers, losses  # noqa: E402
    from tensorflow.keras.models import Model  # noqa: E402

    class Denoise(Model):  # exactly the tutorial's class
        def __init__(self):
            super().__init__()
            self.encoder = tf.keras.Sequential([
                layers.Input(shape=(28, 28, 1)),
                layers.Conv2D(16, (3, 3), activation="relu", padding="same", strides=2),
                layers.Conv2D(8, (3, 3), activation="relu", padding="same", strides=2)])
            self.decoder = tf.keras.Sequential([
                layers.Conv2DTranspose(8, kernel_size=3, strides=2, activation="relu", padding="same"),
                layers.Conv2DTranspose(16, kernel_size=3, strides=2, activation="relu", padding="same"),
                layers.Conv2D(1, kernel_size=(3, 3), activation="sigmoid", padding="same")])

        def call(self, x):
            return self.decoder(self.encoder(x))

    tf.keras.utils.set_random_seed(seed)
    model = Denoise()
    model.compile(optimizer="adam", loss=losses.MeanSquaredError())
    return tf, model


def keras_init(model) -> None:
    """Keras' defaults: Glorot-uniform kernels (fans as Keras counts them) and zero biases."""
    import math

    import torch
    for m in model.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            k = m.weight[0, 0].numel()
            fan_in, fan_out = m.in_channels * k, m.out_channels * k
            limit = math.sqrt(6.0 / (fan_in + fan_out))
            with torch.no_grad():
                m.weight.uniform_(-limit, limit)
                m.bias.zero_()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--limit", type=int, default=None, help="first N images of each split")
    p.add_argument("--no-keras", action="store_true")
    p.add_argument("--no-aelab", action="store_true", help="Keras alone (its quality for another seed)")
    p.add_argument("--init", choices=["torch", "keras"], default="torch",
                   help="aelab's initial weights: PyTorch's defaults, or Keras' (Glorot-uniform kernels, zero biases)")
    p.add_argument("--seed", type=int, default=0, help="seed of both models' initialisation, noise and order")
    p.add_argument("--fast", action="store_true",
                   help="also time `reproduce --fast`'s training to quality against Keras' 10 epochs")
    args = p.parse_args(argv)

    import numpy as np
    import torch

    import aelab
    from aelab.inference import apply_model
    from aelab.metrics import psnr
    from aelab.noise import add_evaluation_noise

    torch.set_num_threads(args.threads)
    train = aelab.load_fashion_mnist("train", limit=args.limit)
    test = aelab.load_fashion_mnist("test", limit=args.limit)
    test_noisy = add_evaluation_noise(test.x, 0.2)

    keras = None if args.no_keras else keras_reference(args.threads, args.seed)
    if keras is not None:
        tf, kmodel = keras
        # the tutorial's data: NHWC, noise drawn once for the whole training set
        rng = np.random.default_rng(args.seed)
        k_train = train.x.permute(0, 2, 3, 1).numpy()
        k_train_noisy = np.clip(k_train + 0.2 * rng.standard_normal(k_train.shape).astype(np.float32), 0, 1)
        k_test = test.x.permute(0, 2, 3, 1).numpy()
        k_test_noisy = test_noisy.permute(0, 2, 3, 1).numpy()

    rows = {"aelab": {"cpu": [], "wall": [], "val": [], "psnr": []},
            "keras": {"cpu": [], "wall": [], "val": [], "psnr": []}}
    clock = {"cpu": time.process_time(), "wall": time.perf_counter()}

    def keras_epoch():
        c0, w0 = time.process_time(), time.perf_counter()
        h = kmodel.fit(k_train_noisy, k_train, epochs=1, batch_size=args.batch_size, shuffle=True,
                       validation_data=(k_test_noisy, k_test), verbose=0)
        rows["keras"]["cpu"].append(time.process_time() - c0)
        rows["keras"]["wall"].append(time.perf_counter() - w0)
        rows["keras"]["val"].append(float(h.history["val_loss"][-1]))
        pred = np.concatenate([kmodel(k_test_noisy[i:i + 1000], training=False).numpy()
                               for i in range(0, len(k_test_noisy), 1000)])
        rows["keras"]["psnr"].append(psnr(test.x, torch.from_numpy(pred).permute(0, 3, 1, 2)))

    def on_epoch_end(epoch, history):
        rows["aelab"]["cpu"].append(time.process_time() - clock["cpu"])
        rows["aelab"]["wall"].append(time.perf_counter() - clock["wall"])
        rows["aelab"]["val"].append(history["val"]["loss"][-1])
        rows["aelab"]["psnr"].append(psnr(test.x, apply_model(model, test_noisy)))
        print(f"epoch {epoch}: aelab {rows['aelab']['cpu'][-1]:.1f} CPU-s, val MSE {rows['aelab']['val'][-1]:.5f}",
              flush=True)
        if keras is not None:
            keras_epoch()
            print(f"epoch {epoch}: keras {rows['keras']['cpu'][-1]:.1f} CPU-s, val MSE {rows['keras']['val'][-1]:.5f}",
                  flush=True)
        clock["cpu"], clock["wall"] = time.process_time(), time.perf_counter()

    torch.manual_seed(args.seed)
    model = aelab.build_model("denoising", train.input_shape, net="conv")
    if args.init == "keras":
        keras_init(model)
    if args.no_aelab:
        for epoch in range(1, args.epochs + 1):
            keras_epoch()
            print(f"epoch {epoch}: keras {rows['keras']['cpu'][-1]:.1f} CPU-s, val MSE {rows['keras']['val'][-1]:.5f}",
                  flush=True)
    else:
        aelab.fit(model, train.x, test.x, aelab.TrainConfig(epochs=args.epochs, batch_size=args.batch_size,
                                                             threads=args.threads, progress=False, seed=args.seed),
                  on_epoch_end=on_epoch_end)

    print(f"\nTutorial model, batch {args.batch_size}, {args.threads} thread(s), {len(train):,} training images, "
          f"torch {torch.__version__}" + (f", TensorFlow {tf.__version__}" if keras is not None else ""))
    print("medians over epochs 2..E; val MSE and test PSNR (dB, noise 0.2) after each epoch\n")
    print("| | CPU-s/epoch | wall-s/epoch | val MSE per epoch | test PSNR per epoch |")
    print("|---|---|---|---|---|")
    for name, r in rows.items():
        if not r["cpu"]:
            continue
        print(f"| {name} | {_median(r['cpu']):.2f} | {_median(r['wall']):.2f} | "
              f"{' '.join(f'{v:.5f}' for v in r['val'])} | {' '.join(f'{v:.2f}' for v in r['psnr'])} |")
    if keras is not None and rows["aelab"]["cpu"]:
        a, k = rows["aelab"], rows["keras"]
        print(f"\nratio Keras/aelab: CPU {_median(k['cpu']) / _median(a['cpu']):.2f}x, "
              f"wall {_median(k['wall']) / _median(a['wall']):.2f}x (above 1: aelab is faster); "
              f"final val MSE aelab {a['val'][-1]:.5f} vs Keras {k['val'][-1]:.5f}")
    elif keras is None:
        print("\n(Keras reference skipped: TensorFlow is not installed; pip install -e '.[bench]')")

    if args.fast:
        from aelab.reproduce import FAST

        torch.manual_seed(0)
        fast_model = aelab.build_model("denoising", train.input_shape, net="conv")
        c0, w0 = time.process_time(), time.perf_counter()
        aelab.fit(fast_model, train.x, test.x, aelab.TrainConfig(threads=args.threads, progress=False, **FAST))
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        quality = psnr(test.x, apply_model(fast_model, test_noisy))
        print(f"\ntime to quality, aelab --fast ({FAST}): {cpu:.1f} CPU-s ({wall:.1f} wall-s), "
              f"test PSNR at 0.2 {quality:.2f} dB (target 21.47)")
        if keras is not None:
            k = rows["keras"]["cpu"]
            keras10 = sum(k) + _median(k) * max(0, 10 - len(k))
            print(f"Keras' 10 epochs: {keras10:.1f} CPU-s ({len(k)} measured, the rest at their median); "
                  f"aelab --fast uses {cpu / keras10:.2f} of it (goal <= 0.33)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
