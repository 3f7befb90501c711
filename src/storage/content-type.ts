import { basename } from './file-names.ts'

export const OCTET_STREAM = 'application/octet-stream'

/**
 * MIME types by extension for what code-interpreter runs read and write. The download route sends
 * this as Content-Type and LibreChat copies it to the browser (spec §3.6), so the extension of the
 * bytes wins over whatever a client declared.
 */
const BY_EXTENSION: Readonly<Record<string, string>> = {
  // images
  png: 'image/png',
  jpg: 'image/jpeg',
  jpeg: 'image/jpeg',
  gif: 'image/gif',
  webp: 'image/webp',
  avif: 'image/avif',
  heic: 'image/heic',
  heif: 'image/heif',
  svg: 'image/svg+xml',
  bmp: 'image/bmp',
  tif: 'image/tiff',
  tiff: 'image/tiff',
  ico: 'image/vnd.microsoft.icon',
  eps: 'application/postscript',
  ps: 'application/postscript',
  // documents
  pdf: 'application/pdf',
  doc: 'application/msword',
  docx: 'application/vnd.openxmlformats-officedocument.wordprocessingml.document',
  xls: 'application/vnd.ms-excel',
  xlsx: 'application/vnd.openxmlformats-officedocument.spreadsheetml.sheet',
  ppt: 'application/vnd.ms-powerpoint',
  pptx: 'application/vnd.openxmlformats-officedocument.presentationml.presentation',
  odt: 'application/vnd.oasis.opendocument.text',
  ods: 'application/vnd.oasis.opendocument.spreadsheet',
  odp: 'application/vnd.oasis.opendocument.presentation',
  rtf: 'application/rtf',
  epub: 'application/epub+zip',
  // text and data
  txt: 'text/plain',
  log: 'text/plain',
  md: 'text/markdown',
  markdown: 'text/markdown',
  csv: 'text/csv',
  tsv: 'text/tab-separated-values',
  json: 'application/json',
  geojson: 'application/geo+json',
  jsonl: 'application/jsonl',
  ndjson: 'application/x-ndjson',
  ipynb: 'application/x-ipynb+json',
  html: 'text/html',
  htm: 'text/html',
  css: 'text/css',
  xml: 'application/xml',
  yaml: 'application/yaml',
  yml: 'application/yaml',
  toml: 'application/toml',
  ini: 'text/plain',
  tex: 'text/x-tex',
  sql: 'application/sql',
  // code
  py: 'text/x-python',
  sh: 'text/x-shellscript',
  bash: 'text/x-shellscript',
  js: 'text/javascript',
  mjs: 'text/javascript',
  // in a code interpreter `.ts` is TypeScript far more often than an MPEG transport stream
  ts: 'text/x-typescript',
  r: 'text/x-r',
  c: 'text/x-c',
  h: 'text/x-c',
  cpp: 'text/x-c++',
  java: 'text/x-java',
  go: 'text/x-go',
  rs: 'text/x-rust',
  rb: 'text/x-ruby',
  // archives
  zip: 'application/zip',
  gz: 'application/gzip',
  tgz: 'application/gzip',
  tar: 'application/x-tar',
  bz2: 'application/x-bzip2',
  xz: 'application/x-xz',
  '7z': 'application/x-7z-compressed',
  // scientific data
  parquet: 'application/vnd.apache.parquet',
  feather: 'application/vnd.apache.arrow.file',
  arrow: 'application/vnd.apache.arrow.file',
  npy: 'application/x-npy',
  npz: 'application/x-npz',
  pkl: 'application/x-python-pickle',
  pickle: 'application/x-python-pickle',
  h5: 'application/x-hdf5',
  hdf5: 'application/x-hdf5',
  sqlite: 'application/vnd.sqlite3',
  db: 'application/vnd.sqlite3',
  // audio and video
  mp3: 'audio/mpeg',
  wav: 'audio/wav',
  ogg: 'audio/ogg',
  flac: 'audio/flac',
  m4a: 'audio/mp4',
  mp4: 'video/mp4',
  webm: 'video/webm',
  mov: 'video/quicktime',
  avi: 'video/x-msvideo',
  // fonts
  ttf: 'font/ttf',
  otf: 'font/otf',
  woff: 'font/woff',
  woff2: 'font/woff2',
}

/** Types whose bytes are text, written as UTF-8 by everything that runs in the jail. */
const TEXT_TYPES = new Set([
  'application/json', 'application/geo+json', 'application/jsonl', 'application/x-ndjson',
  'application/x-ipynb+json', 'application/xml', 'application/yaml', 'application/toml',
  'application/sql', 'application/postscript', 'image/svg+xml',
])

// RFC 6838 §4.2: restricted-name, at most 127 characters on either side of the slash
const MEDIA_TYPE = /^[a-z0-9][a-z0-9!#$&^_.+-]{0,126}\/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}$/

/**
 * The Content-Type for a stored file: by the extension of `name`'s last segment; for an unknown
 * extension, the client's `declared` type if it is a well-formed `type/subtype` (parameters dropped)
 * other than application/octet-stream; else application/octet-stream. Text types gain
 * `; charset=utf-8`.
 */
export function contentTypeFor (name: string, declared?: string): string {
  const type = BY_EXTENSION[extensionOf(name)] ?? parseDeclared(declared) ?? OCTET_STREAM
  return isText(type) ? `${type}; charset=utf-8` : type
}

/** Lower-case extension without the dot; '' for `Makefile` and dot-files such as `.bashrc`. */
function extensionOf (name: string): string {
  const last = basename(name)
  const dot = last.lastIndexOf('.')
  return dot > 0 ? last.slice(dot + 1).toLowerCase() : ''
}

function parseDeclared (declared: string | undefined): string | undefined {
  if (declared === undefined) return undefined
  const type = (declared.split(';')[0] ?? '').trim().toLowerCase()
  return MEDIA_TYPE.test(type) && type !== OCTET_STREAM ? type : undefined
}

function isText (type: string): boolean {
  return type.startsWith('text/') || TEXT_TYPES.has(type)
}
