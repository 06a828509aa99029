"""A pushed model as TF Serving and its clients use it: the warm-up requests and the load
check before a push, and the model found, loaded and asked for predictions on image files
through its own serving signature (`medtfx predict`)."""
