"""Trains the example regression model and exports it for TF Serving and the stand-in.

    python3 -m venv /tmp/tf && /tmp/tf/bin/pip install -r examples/model/requirements.txt
    /tmp/tf/bin/python examples/model/create_model.py

Writes, next to this file:
  regression/1/saved_model.pb, variables/   the SavedModel (signature serving_default:
                                             input `features` [None, 10] float32,
                                             output `prediction` [None, 1] float32)
  regression/1/model.onnx                    the same graph, converted from the SavedModel
  test.csv                                   held-out rows (header + 10 raw feature columns)
  expected.json                              {"instances": [...], "predictions": [...]} as
                                             TensorFlow computed them

The data is scikit-learn's bundled diabetes set (no download). Normalization lives inside
the model, so requests carry raw feature values. The MLP is deliberately mid-size
(10 -> 1024 -> 1024 -> 512 -> 1) so that batching changes throughput measurably.
"""

import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402
import keras  # noqa: E402
from sklearn.datasets import load_diabetes  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
BASE = os.path.join(HERE, "regression")
VERSION_DIR = os.path.join(BASE, "1")
SEED = 42


def main():
    keras.utils.set_random_seed(SEED)
    data = load_diabetes(scaled=False)
    x = data.data.astype(np.float32)
    y = data.target.astype(np.float32).reshape(-1, 1)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=SEED)

    norm = keras.layers.Normalization(axis=-1, name="normalize")
    norm.adapt(x_train)
    inputs = keras.Input(shape=(10,), dtype="float32", name="features")
    h = norm(inputs)
    for i, width in enumerate((1024, 1024, 512)):
        h = keras.layers.Dense(width, activation="relu", name=f"dense_{i}")(h)
    out = keras.layers.Dense(1, name="prediction")(h)
    model = keras.Model(inputs, out, name="regression")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse", metrics=["mae"])
    model.fit(x_train, y_train, epochs=60, batch_size=32, verbose=0, validation_split=0.1)
    mse, mae = model.evaluate(x_test, y_test, verbose=0)
    print(f"held-out MSE {mse:.1f}, MAE {mae:.1f}")

    shutil.rmtree(BASE, ignore_errors=True)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name="serving_default",
        fn=lambda features: {"prediction": model(features, training=False)},
        input_signature=[tf.TensorSpec([None, 10], tf.float32, name="features")],
    )
    archive.write_out(VERSION_DIR)

    onnx_path = os.path.join(VERSION_DIR, "model.onnx")
    subprocess.run(
        [sys.executable, "-m", "tf2onnx.convert", "--saved-model", VERSION_DIR,
         "--signature_def", "serving_default", "--opset", "17", "--output", onnx_path],
        check=True,
    )
    rename_batch_dim(onnx_path)

    with open(os.path.join(HERE, "test.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(data.feature_names)
        for row in x_test:
            w.writerow([repr(float(v)) for v in row])

    # Predictions as TensorFlow Serving would compute them: through the exported signature.
    loaded = tf.saved_model.load(VERSION_DIR)
    sig = loaded.signatures["serving_default"]
    rows = x_test[:8]
    preds = sig(features=tf.constant(rows))["prediction"].numpy()
    with open(os.path.join(HERE, "expected.json"), "w") as f:
        json.dump({"instances": rows.tolist(), "predictions": preds.tolist()}, f, indent=1)
        f.write("\n")
    print("wrote", BASE, "test.csv and expected.json")


def rename_batch_dim(path):
    """tf2onnx names the free batch dimension unk__N; call it `batch`."""
    import onnx

    m = onnx.load(path)
    for value in list(m.graph.input) + list(m.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].dim_param.startswith("unk__"):
            dims[0].dim_param = "batch"
    onnx.save(m, path)


if __name__ == "__main__":
    main()
