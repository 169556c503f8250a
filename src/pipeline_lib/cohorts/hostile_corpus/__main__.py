"""``python -m pipeline_lib.cohorts.hostile_corpus``: build, run and score the corpus."""

from pipeline_lib.cohorts.hostile_corpus.running import main

main()
