from stayhuman.cli import main

raise SystemExit(main())
