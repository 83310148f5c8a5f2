files
