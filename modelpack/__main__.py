from modelpack.cli import main

raise SystemExit(main())
