from pytei.cli import main

main()
