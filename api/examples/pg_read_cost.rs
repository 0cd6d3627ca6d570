//! What one `GET /reviews` statement costs the API's side of the PostgreSQL connection, by
//! client: sqlx as the store runs it, and a bare wire-protocol client (the statement prepared
//! once; per query Bind, Execute, Sync and reading to ReadyForQuery) that builds the same owned
//! values, one query at a time per connection or four pipelined. `--connections` connections
//! run at once on one current-thread runtime, like the API's one worker; CPU is this process's
//! utime+stime over the run divided by the queries, random product ids. Run it pinned to one
//! core, the database elsewhere:
//!
//! ```sh
//! cargo build --release -p reviews-api --example pg_read_cost
//! taskset -c 0 target/release/examples/pg_read_cost postgres://postgres@127.0.0.1/reviews_bench_100000 100000
//! ```
//!
//! The bare client speaks only what the benchmark database needs (trust authentication, no
//! TLS): it measures how much of the API's time per query is the driver, not a way to connect.

use std::str::FromStr;
use std::time::Instant;

use anyhow::{Context, bail};
use reviews_api::store::statements;
use sqlx::postgres::{PgConnectOptions, PgRow};
use sqlx::{ConnectOptions, Row};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Connections driven at once (the API's read pool holds 16 by default).
const CONNECTIONS: usize = 16;
/// Queries per connection and client.
const QUERIES: usize = 1500;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .context("usage: pg_read_cost DATABASE_URL [PRODUCTS]")?;
    let products: u64 = args.next().map_or(Ok(100_000), |s| s.parse())?;
    let sql = statements::postgres()[0].sql;
    let opts =
        PgConnectOptions::from_str(&url)?.options([("plan_cache_mode", "force_generic_plan")]);
    let server = Server {
        host: opts.get_host().to_owned(),
        port: opts.get_port(),
        user: opts.get_username().to_owned(),
        database: opts
            .get_database()
            .unwrap_or(opts.get_username())
            .to_owned(),
    };
    for (name, depth) in [
        ("sqlx, as the store", 0),
        ("bare protocol", 1),
        ("bare protocol, 4 pipelined", 4),
    ] {
        let connections = if depth > 1 {
            CONNECTIONS / depth
        } else {
            CONNECTIONS
        };
        let (cpu0, t0) = (cpu_seconds()?, Instant::now());
        let mut set = tokio::task::JoinSet::new();
        for i in 0..connections {
            let ids = Ids(42 + i as u64, products);
            let queries = QUERIES * depth.max(1);
            if depth == 0 {
                set.spawn(with_sqlx(opts.clone(), sql, ids, queries));
            } else {
                set.spawn(bare(server.clone(), sql, ids, queries, depth));
            }
        }
        while let Some(done) = set.join_next().await {
            done??;
        }
        let queries = (connections * QUERIES * depth.max(1)) as f64;
        println!(
            "{name:<28} {:>5.1} µs CPU/query  {:>6.0} queries/s",
            (cpu_seconds()? - cpu0) * 1e6 / queries,
            queries / t0.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// utime + stime of this process.
fn cpu_seconds() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let after_name = stat.rfind(')').context("/proc/self/stat")? + 2;
    let fields: Vec<&str> = stat[after_name..].split(' ').collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    Ok(ticks / 100.0)
}

/// Random product ids (xorshift), seeded per connection so runs compare.
struct Ids(u64, u64);

impl Ids {
    fn next(&mut self) -> i64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % self.1) as i64 + 1
    }
}

#[derive(Clone)]
struct Server {
    host: String,
    port: u16,
    user: String,
    database: String,
}

/// The page's values as the store builds them (see `review_from_row`).
async fn with_sqlx(
    opts: PgConnectOptions,
    sql: &'static str,
    mut ids: Ids,
    queries: usize,
) -> anyhow::Result<usize> {
    let mut conn = opts.connect().await?;
    let mut kept = 0;
    for _ in 0..queries {
        let rows: Vec<PgRow> = sqlx::query(sql)
            .bind(ids.next())
            .bind(5i64)
            .bind(0i64)
            .fetch_all(&mut conn)
            .await?;
        for row in &rows {
            let ints: [i64; 4] = [
                row.try_get_unchecked(0)?,
                row.try_get_unchecked(1)?,
                row.try_get_unchecked(6)?,
                row.try_get_unchecked(8)?,
            ];
            let recommend: bool = row.try_get_unchecked(3)?;
            let response: Option<String> = row.try_get_unchecked(4)?;
            let texts: [String; 3] = [
                row.try_get_unchecked(2)?,
                row.try_get_unchecked(5)?,
                row.try_get_unchecked(7)?,
            ];
            let photo_ids: Option<Vec<i64>> = row.try_get_unchecked(9)?;
            let urls: Option<Vec<String>> = row.try_get_unchecked(10)?;
            kept += ints.len()
                + usize::from(recommend)
                + response.map_or(0, |r| r.len())
                + texts.iter().map(String::len).sum::<usize>()
                + photo_ids.map_or(0, |p| p.len())
                + urls.map_or(0, |u| u.len());
        }
    }
    Ok(kept)
}

async fn bare(
    server: Server,
    sql: &str,
    mut ids: Ids,
    queries: usize,
    depth: usize,
) -> anyhow::Result<usize> {
    let mut s = TcpStream::connect((server.host.as_str(), server.port)).await?;
    s.set_nodelay(true)?;
    let mut out = Vec::new();
    let mut startup = 196608i32.to_be_bytes().to_vec();
    for (key, value) in [
        ("user", server.user.as_str()),
        ("database", server.database.as_str()),
        ("client_encoding", "UTF8"),
        ("options", "-c plan_cache_mode=force_generic_plan"),
    ] {
        for part in [key, value] {
            startup.extend_from_slice(part.as_bytes());
            startup.push(0);
        }
    }
    startup.push(0);
    out.extend_from_slice(&(startup.len() as i32 + 4).to_be_bytes());
    out.extend_from_slice(&startup);
    s.write_all(&out).await?;
    let mut buf = Vec::with_capacity(16384);
    let mut kept = read_until_ready(&mut s, &mut buf, 1).await?;
    out.clear();
    message(&mut out, b'P', |b| {
        b.extend_from_slice(b"s\0");
        b.extend_from_slice(sql.as_bytes());
        b.extend_from_slice(&[0, 0, 0]);
    });
    message(&mut out, b'S', |_| {});
    s.write_all(&out).await?;
    kept += read_until_ready(&mut s, &mut buf, 1).await?;
    let mut done = 0;
    while done < queries {
        out.clear();
        for _ in 0..depth {
            let id = ids.next();
            message(&mut out, b'B', |b| {
                // Unnamed portal, statement "s", all three parameters and all results binary.
                b.extend_from_slice(b"\0s\0\0\x01\0\x01\0\x03");
                for value in [id, 5, 0] {
                    b.extend_from_slice(&8i32.to_be_bytes());
                    b.extend_from_slice(&value.to_be_bytes());
                }
                b.extend_from_slice(b"\0\x01\0\x01");
            });
            message(&mut out, b'E', |b| b.extend_from_slice(&[0; 5]));
            message(&mut out, b'S', |_| {});
        }
        s.write_all(&out).await?;
        kept += read_until_ready(&mut s, &mut buf, depth).await?;
        done += depth;
    }
    Ok(kept)
}

fn message(out: &mut Vec<u8>, tag: u8, body: impl FnOnce(&mut Vec<u8>)) {
    out.push(tag);
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    body(out);
    let len = (out.len() - at) as i32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

/// Reads until `ready` ReadyForQuery messages have come, building each DataRow's values.
async fn read_until_ready(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    mut ready: usize,
) -> anyhow::Result<usize> {
    buf.clear();
    let (mut at, mut kept) = (0, 0);
    loop {
        while buf.len() >= at + 5 {
            let tag = buf[at];
            let len = u32::from_be_bytes(buf[at + 1..at + 5].try_into()?) as usize;
            if buf.len() < at + 1 + len {
                break;
            }
            let body = &buf[at + 5..at + 1 + len];
            match tag {
                b'E' => bail!("{}", String::from_utf8_lossy(body)),
                b'D' => kept += decode_row(body)?,
                b'Z' => ready -= 1,
                _ => {}
            }
            at += 1 + len;
            if ready == 0 {
                return Ok(kept);
            }
        }
        if buf.capacity() - buf.len() < 8192 {
            buf.reserve(16384);
        }
        if s.read_buf(buf).await? == 0 {
            bail!("the server closed the connection");
        }
    }
}

/// A page row's owned values: integers, a boolean, Strings (validated copies), the two
/// photo arrays element by element.
fn decode_row(mut b: &[u8]) -> anyhow::Result<usize> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> anyhow::Result<&'a [u8]> {
        if b.len() < n {
            bail!("short DataRow");
        }
        let (head, tail) = b.split_at(n);
        *b = tail;
        Ok(head)
    }
    let columns = u16::from_be_bytes(take(&mut b, 2)?.try_into()?);
    let (mut ints, mut texts) = (Vec::new(), Vec::new());
    for column in 0..columns {
        let len = i32::from_be_bytes(take(&mut b, 4)?.try_into()?);
        if len < 0 {
            continue;
        }
        let mut value = take(&mut b, len as usize)?;
        match column {
            0 | 1 | 6 | 8 => ints.push(i64::from_be_bytes(value.try_into()?)),
            3 => ints.push(i64::from(value[0])),
            9 | 10 => {
                let dims = i32::from_be_bytes(take(&mut value, 4)?.try_into()?) as usize;
                take(&mut value, 8 + 8 * dims)?;
                while !value.is_empty() {
                    let len = i32::from_be_bytes(take(&mut value, 4)?.try_into()?) as usize;
                    let element = take(&mut value, len)?;
                    if column == 9 {
                        ints.push(i64::from_be_bytes(element.try_into()?));
                    } else {
                        texts.push(String::from_utf8(element.to_vec())?);
                    }
                }
            }
            _ => texts.push(String::from_utf8(value.to_vec())?),
        }
    }
    Ok(ints.len() + texts.len())
}
