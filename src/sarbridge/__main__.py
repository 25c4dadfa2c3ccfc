from sarbridge.cli import main

raise SystemExit(main())
