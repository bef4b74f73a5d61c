"""`python -m fastdavs.evaluate`: the same command as `fastdavs-eval` (`fastdavs.evaluate.cli`)."""

import sys

from fastdavs.evaluate.cli import main

sys.exit(main())
