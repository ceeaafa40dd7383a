from mumo.cli import main

main()
