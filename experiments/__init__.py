"""Small-scale reproduction of the paper's experiments on data that ships with scikit-learn."""
