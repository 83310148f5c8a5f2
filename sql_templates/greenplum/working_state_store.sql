rows
