"""`python -m fastdavs.train`: the same command as `fastdavs-train` (`fastdavs.train.cli`)."""

import sys

from fastdavs.train.cli import main

sys.exit(main())
