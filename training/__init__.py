"""The TensorFlow/Keras side of the pipeline: input pipelines, model, training, Grad-CAM.

Imports TensorFlow; the library (``melanoma``) never does.
"""
