//! An S3 server on loopback for benchmarks and manual tries:
//! `rota-test-s3 ROOT [PORT] [--lean]` serves each directory of ROOT as a
//! bucket, accepting the access key `rota-test-key` and the secret
//! `rota-test-secret-do-not-print`, until it is killed. It prints the URL it
//! listens on. It is s3s-fs, or with `--lean` the read-only backend of
//! `rota_testkit::lean_s3`, which costs the machine far less CPU.

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let lean = args.iter().any(|a| a == "--lean");
    args.retain(|a| a != "--lean");
    let mut args = args.into_iter();
    let Some(root) = args.next() else {
        eprintln!("usage: rota-test-s3 ROOT [PORT] [--lean]");
        std::process::exit(2);
    };
    let port = args.next().map_or(0, |p| {
        p.parse().unwrap_or_else(|_| {
            eprintln!("rota-test-s3: not a port: {p}");
            std::process::exit(2)
        })
    });
    let root = std::path::Path::new(&root);
    let addr = if lean {
        rota_testkit::serve_lean_s3(root, port).await
    } else {
        rota_testkit::serve_s3(root, port).await
    };
    println!("http://{addr}");
    std::future::pending::<()>().await;
}
