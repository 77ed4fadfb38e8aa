"""One-off studies: each asks one question of the method and writes its answer under results/.

  python -m studies.augmentation_study --report_only   # 50 augmented labels vs the paper's "around 85 %"
  python -m studies.toy_ablation --report_only         # which setting moves the toy's 8-label rows

An entry script (`*_study.py`, `toy_ablation.py`) holds the flags and main(); what it runs and reports lives
beside it without flags (`augmentation_variants.py`, `toy_factors.py`), so tests and other scripts import it.
"""
