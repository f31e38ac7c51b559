from devhost.runner import main

main()
