//! An S3 server on loopback for benchmarks and manual tries:
//! `rota-test-s3 ROOT [PORT]` serves each directory of ROOT as a bucket,
//! accepting the access key `rota-test-key` and the secret
//! `rota-test-secret-do-not-print`, until it is killed. It prints the URL it
//! listens on.

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let Some(root) = args.next() else {
        eprintln!("usage: rota-test-s3 ROOT [PORT]");
        std::process::exit(2);
    };
    let port = args.next().map_or(0, |p| {
        p.parse().unwrap_or_else(|_| {
            eprintln!("rota-test-s3: not a port: {p}");
            std::process::exit(2)
        })
    });
    let addr = rota_testkit::serve_s3(std::path::Path::new(&root), port).await;
    println!("http://{addr}");
    std::future::pending::<()>().await;
}
