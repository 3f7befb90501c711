// s3rver ships no types: the part the tests use
declare module 's3rver' {
  export default class S3rver {
    constructor (options: { port?: number, address?: string, directory: string, silent?: boolean })
    run (): Promise<{ port: number }>
    close (): Promise<void>
    /** the http.Server, once `run` resolved */
    httpServer?: import('node:http').Server
  }
}
