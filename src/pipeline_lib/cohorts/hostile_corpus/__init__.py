"""A corpus of bad and awkward inputs, each with the decision ingestion must reach.

Every :class:`Case` builds one entry (a file, a folder, a link, a pipe, ...) in its own
folder of a corpus tree; :func:`run_corpus` runs discovery over the whole tree and
ingest over every discovered subject in one go, exactly as the workflow does
(staging links included), and :func:`judge` compares each case's outcome with its
expected decision:

* ``refuse``: discovery lists the entry as ignored, or ingest fails it, with a
  reason matching the case's pattern;
* ``accept``: ingested, no warning;
* ``accept with warning``: ingested, with a warning matching the pattern.

The cases are grouped by kind of input, one module each: ``filesystem_cases`` (links, pipes,
permissions, names, depth), ``nifti_cases`` and ``dicom_cases``; ``building`` holds what they are
built from and ``running`` builds, runs, judges and scores the corpus.

Commands (run from the repository root)::

    python -m pipeline_lib.cohorts.hostile_corpus --scorecard docs/HOSTILE_INPUTS.md
    python -m pipeline_lib.cohorts.hostile_corpus --build DIR     # the tree only, e.g. to benchmark

When run as root, discovery and ingest run in a child process without the
capabilities that let root read any file (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH),
so the unreadable-file cases mean what they say. Cases that cannot be built here
(a device node needs CAP_MKNOD) are reported as not built.
"""

from pipeline_lib.cohorts.hostile_corpus.building import ACCEPT, PHI_MARK, REFUSE, SETTINGS, WARN, Case, phantom
from pipeline_lib.cohorts.hostile_corpus.running import (SALT, SAMPLES_SCHEMA, build_corpus, cases,
                                                         drop_dac_capabilities, judge, main, run_corpus,
                                                         run_without_dac_override, scorecard)

__all__ = ["ACCEPT", "PHI_MARK", "REFUSE", "SETTINGS", "WARN", "Case", "phantom", "SALT", "SAMPLES_SCHEMA",
           "build_corpus", "cases", "drop_dac_capabilities", "judge", "main", "run_corpus",
           "run_without_dac_override", "scorecard"]
