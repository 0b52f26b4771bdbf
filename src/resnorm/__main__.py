from resnorm.cli import main

raise SystemExit(main())
