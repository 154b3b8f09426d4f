//! PostgreSQL: a deadpool connection pool over tokio-postgres, with prepared-statement caching.

use std::error::Error as StdError;

use bytes::BytesMut;
use deadpool_postgres::GenericClient;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use myelin_config::PostgresConfig;
use tokio_postgres::NoTls;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};

use super::{Row, Value};
use crate::StoreError;

type BoxError = Box<dyn StdError + Sync + Send>;

impl ToSql for Value {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(v) => match *ty {
                Type::INT8 => v.to_sql(ty, out),
                Type::INT4 => i32::try_from(*v)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*v)?.to_sql(ty, out),
                Type::BOOL => (*v != 0).to_sql(ty, out),
                Type::FLOAT8 => (*v as f64).to_sql(ty, out),
                Type::FLOAT4 => (*v as f32).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR => v.to_string().to_sql(ty, out),
                _ => Err(format!("cannot bind an integer to a {ty} parameter").into()),
            },
            Value::Real(v) => match *ty {
                Type::FLOAT8 => v.to_sql(ty, out),
                Type::FLOAT4 => (*v as f32).to_sql(ty, out),
                _ => Err(format!("cannot bind a float to a {ty} parameter").into()),
            },
            Value::Bool(v) => match *ty {
                Type::BOOL => v.to_sql(ty, out),
                Type::INT8 => i64::from(*v).to_sql(ty, out),
                Type::INT4 => i32::from(*v).to_sql(ty, out),
                Type::INT2 => i16::from(*v).to_sql(ty, out),
                _ => Err(format!("cannot bind a boolean to a {ty} parameter").into()),
            },
            Value::Text(v) => match *ty {
                Type::BYTEA => v.as_bytes().to_sql(ty, out),
                _ => v.as_str().to_sql(&Type::TEXT, out),
            },
            Value::Blob(v) => match *ty {
                Type::BYTEA => v.as_slice().to_sql(ty, out),
                _ => Err(format!("cannot bind bytes to a {ty} parameter").into()),
            },
        }
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

impl<'a> FromSql<'a> for Value {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        Ok(match *ty {
            Type::BOOL => Value::Bool(bool::from_sql(ty, raw)?),
            Type::INT2 => Value::Int(i16::from_sql(ty, raw)?.into()),
            Type::INT4 => Value::Int(i32::from_sql(ty, raw)?.into()),
            Type::INT8 => Value::Int(i64::from_sql(ty, raw)?),
            Type::OID => Value::Int(u32::from_sql(ty, raw)?.into()),
            Type::FLOAT4 => Value::Real(f32::from_sql(ty, raw)?.into()),
            Type::FLOAT8 => Value::Real(f64::from_sql(ty, raw)?),
            Type::BYTEA => Value::Blob(Vec::<u8>::from_sql(ty, raw)?),
            _ => Value::Text(String::from_utf8(raw.to_vec())?),
        })
    }

    fn from_sql_null(_ty: &Type) -> Result<Self, BoxError> {
        Ok(Value::Null)
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }
}

pub(crate) fn connect(config: &PostgresConfig) -> Result<Pool, StoreError> {
    let mut pg = tokio_postgres::Config::new();
    if let Some(user) = &config.user {
        pg.user(user);
    }
    if let Some(password) = &config.password {
        pg.password(password);
    }
    if let Some(dbname) = &config.dbname {
        pg.dbname(dbname);
    }
    // A host starting with `/` is a UNIX socket directory, as in libpq.
    pg.host(config.host.as_deref().unwrap_or("localhost"));
    if let Some(port) = config.port {
        pg.port(port);
    }
    pg.application_name(config.application_name.as_deref().unwrap_or("myelin"));
    if let Some(options) = &config.options {
        pg.options(options);
    }
    let manager = Manager::from_config(pg, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Pool::builder(manager)
        .max_size(config.cp_max)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(|e| StoreError::Open(format!("PostgreSQL pool: {e}")))
}

fn params_of(params: &[Value]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

fn convert_rows(rows: Vec<tokio_postgres::Row>) -> Result<Vec<Row>, StoreError> {
    rows.into_iter()
        .map(|row| {
            let values = (0..row.len()).map(|i| row.try_get::<_, Value>(i)).collect::<Result<Vec<_>, _>>()?;
            Ok(Row { values })
        })
        .collect()
}

pub(crate) async fn query<C: GenericClient + Sync>(
    client: &C,
    sql: &str,
    params: &[Value],
) -> Result<Vec<Row>, StoreError> {
    let statement = client.prepare_cached(sql).await?;
    let rows = client.query(&statement, &params_of(params)).await?;
    convert_rows(rows)
}

pub(crate) async fn execute<C: GenericClient + Sync>(
    client: &C,
    sql: &str,
    params: &[Value],
) -> Result<u64, StoreError> {
    let statement = client.prepare_cached(sql).await?;
    Ok(client.execute(&statement, &params_of(params)).await?)
}
