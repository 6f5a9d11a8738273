import sys

from modelpack.serving.server import main

sys.exit(main())
