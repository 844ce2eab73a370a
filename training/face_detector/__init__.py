"""Our face detector: a small anchor-free (centre heat map) CNN trained on synthetic scenes
made from ../shared/data/nose, exported as a frozen graph for cv2.dnn.  See train.py."""
