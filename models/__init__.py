"""edgeseq model zoo: small sequence models trained on real, offline, package-bundled data sets.

Each recipe module (``models.<name>``) defines a plain ``nn.Module`` and a
``build(pretrained=True)`` factory that loads ``models/checkpoints/<name>.pt``.
Recipes import only torch/numpy; data loading for training lives in
``models.datasets`` (needs the ``train`` extra) and is imported lazily.
"""

RECIPES = (
    "fashion_lstm",
    "vowels_bigru",
    "motion_lstm",
    "msft_cnnlstm",
    "msft_cnnlstm_per_layer",
    "reviews_bilstm",
)
