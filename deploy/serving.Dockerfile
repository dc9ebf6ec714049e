# The serving image by hand: stock TensorFlow Serving plus the example model at
# /models/regression. stacks/gke.hcl does not use it: its `image "serving"` block
# (`preset = "serving"`) has apply generate the same shape from the stack (docs/gke.md).
# The configuration (models.config, batching_parameters.txt) comes from the ConfigMap that
# benchstack renders and mounts at /config; the arguments come from the stack.
#
#   docker build -f deploy/serving.Dockerfile -t gcr.io/PROJECT/tf-serving-regression:latest .
#   docker push gcr.io/PROJECT/tf-serving-regression:latest
#
# SavedModels written by TF 2.21 use the DisableCopyOnRead op: use a TF Serving release at
# least as new as the TensorFlow that exported the model.
ARG TF_SERVING_IMAGE=tensorflow/serving:2.19.0
FROM ${TF_SERVING_IMAGE}
COPY examples/model/regression /models/regression
EXPOSE 8500 8501
# The stock entrypoint (tf_serving_entrypoint.sh) passes its arguments to tensorflow_model_server.
