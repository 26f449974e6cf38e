package board

type memHub = any
