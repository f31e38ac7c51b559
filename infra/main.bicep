// GRC Event Streaming Service: everything the Functions app needs, in one resource group.
// Deployed by `azd up` (azure.yaml at the repo root) or `az deployment sub create`.
// Data-plane access is by the Function App's system-assigned managed identity wherever the
// service supports it; the secrets (the Azure Managed Redis access key when keys are used, the
// continuation-token HMAC key) live in Key Vault.
targetScope = 'subscription'

// ---------------------------------------------------------------------------------------------
// Environment
// ---------------------------------------------------------------------------------------------
@minLength(1)
@maxLength(64)
@description('azd environment name; used for the resource group name and the naming hash.')
param environmentName string

@minLength(1)
@description('Region for every resource (must offer Flex Consumption).')
@metadata({ azd: { type: 'location' } })
param location string

@description('Resource group name; default rg-<environmentName>.')
param resourceGroupName string = ''

@description('Salt of the Key Vault name, set by the postdown hook in azure.yaml after `azd down` (a deleted vault keeps its name for 90 days). Empty = the original name.')
param keyVaultNameSalt string = ''

@description('Extra tags for every resource.')
param tags object = {}

// ---------------------------------------------------------------------------------------------
// Network: public endpoints (TLS 1.2, Entra ID) or private endpoints in a new VNet
// ---------------------------------------------------------------------------------------------
@description('Public network access of the data services (the Function App has apiPublicNetworkAccess). "Disabled" applies only with usePrivateEndpoints.')
@allowed(['Enabled', 'Disabled'])
param publicNetworkAccess string = 'Enabled'

@description('Public network access of the Function App (the HTTP API). Callers authenticate with a function key and an Entra ID token; "Disabled" needs your own inbound private endpoint or front door.')
@allowed(['Enabled', 'Disabled'])
param apiPublicNetworkAccess string = 'Enabled'

@description('Create a VNet, private endpoints and private DNS zones for storage, Cosmos DB, Event Hubs, Redis and Key Vault, and integrate the Function App into it.')
param usePrivateEndpoints bool = false

@description('Address space of the VNet created when usePrivateEndpoints is true.')
param vnetAddressPrefix string = '10.40.0.0/16'

@description('Subnet for the private endpoints (inside vnetAddressPrefix).')
param privateEndpointSubnetPrefix string = '10.40.1.0/24'

@description('Subnet delegated to Flex Consumption VNet integration (inside vnetAddressPrefix).')
param functionSubnetPrefix string = '10.40.2.0/24'

// ---------------------------------------------------------------------------------------------
// Encryption at rest: platform-managed keys unless a customer-managed key is given
// ---------------------------------------------------------------------------------------------
@description('Customer-managed key: Key Vault URI (https://<vault>.vault.azure.net/) holding the key. Empty = platform-managed keys.')
param cmkKeyVaultUri string = ''

@description('Customer-managed key: key name in cmkKeyVaultUri.')
param cmkKeyName string = ''

@description('Customer-managed key: resource id of a user-assigned identity that holds "Key Vault Crypto Service Encryption User" on the key.')
param cmkUserAssignedIdentityId string = ''

@description('Customer-managed key: version of cmkKeyName for Azure Managed Redis, which accepts only a versioned key URL (rotate by redeploying with the new version). Empty = Redis keeps Microsoft-managed keys.')
param cmkRedisKeyVersion string = ''

// ---------------------------------------------------------------------------------------------
// Function App
// ---------------------------------------------------------------------------------------------
@description('Flex Consumption instance memory (MB).')
@allowed([512, 2048, 4096])
param functionInstanceMemoryMB int = 2048

@description('Flex Consumption maximum instance count.')
@minValue(40)
@maxValue(1000)
param functionMaximumInstanceCount int = 100

@description('Always-ready (pre-warmed) instances for the HTTP functions; 0 = scale from zero.')
param functionAlwaysReadyInstances int = 0

@description('Zone-redundant Flex Consumption plan (region must support it).')
param functionZoneRedundant bool = false

@description('LOG_LEVEL of the app.')
@allowed(['debug', 'info', 'warning', 'error'])
param logLevel string = 'info'

// ---------------------------------------------------------------------------------------------
// Data services
// ---------------------------------------------------------------------------------------------
@description('Cosmos DB capacity: Serverless (dev) or Provisioned (autoscale on the database).')
@allowed(['Serverless', 'Provisioned'])
param cosmosCapacityMode string = 'Serverless'

@description('Autoscale max RU/s of the database when cosmosCapacityMode is Provisioned.')
param cosmosAutoscaleMaxThroughput int = 4000

@description('Cosmos DB database holding the monitored containers.')
param cosmosDatabaseName string = 'grc'

@description('Monitored containers (partition key /tenantId).')
param cosmosContainers object = {
  risks: 'risks'
  controls: 'controls'
  assessments: 'assessments'
  compliance: 'compliance'
  policies: 'policies'
}

@description('Lease container of the Cosmos DB triggers (partition key /id).')
param cosmosLeaseContainerName string = 'leases'

@description('Event Hubs tier (Kafka endpoint needs Standard or above).')
@allowed(['Standard', 'Premium'])
param eventHubsSku string = 'Standard'

@description('Event Hubs throughput units (Standard) or processing units (Premium).')
param eventHubsCapacity int = 1

@description('Disable SAS keys on the Event Hubs namespace (Kafka then authenticates with OAUTHBEARER + managed identity).')
param eventHubsDisableLocalAuth bool = true

@description('One event hub (Kafka topic) per entry: name, partitionCount, retentionHours.')
param eventHubs array = [
  { name: 'grc-events', partitionCount: 8, retentionHours: 168 }
  { name: 'grc-risk-events', partitionCount: 4, retentionHours: 168 }
  { name: 'grc-compliance-events', partitionCount: 4, retentionHours: 168 }
  { name: 'grc-system-events', partitionCount: 2, retentionHours: 72 }
]

@description('Consumer groups created on every event hub.')
param eventHubConsumerGroups array = ['analytics', 'compliance-monitoring', 'ml-features']

// Azure Managed Redis (Redis 7.4; the streams destination needs XADD MINID, Redis >= 6.2).
@description('Azure Managed Redis SKU: Balanced_B0/B1 for dev, Balanced_B5+ or MemoryOptimized for prod.')
@allowed(['Balanced_B0', 'Balanced_B1', 'Balanced_B3', 'Balanced_B5', 'Balanced_B10', 'Balanced_B20', 'Balanced_B50', 'MemoryOptimized_M10', 'MemoryOptimized_M20', 'MemoryOptimized_M50', 'ComputeOptimized_X3', 'ComputeOptimized_X5', 'ComputeOptimized_X10'])
param redisSku string = 'Balanced_B0'

@description('Azure Managed Redis high availability (replication, SLA): prod.parameters.json sets true. false (the dev default) halves the cost.')
param redisHighAvailability bool = false

@description('Redis with Entra ID: the app identity gets the "default" access policy, signs in with its token (REDIS_AUTH=entra) and access keys are disabled; false = access key in Key Vault (REDIS_AUTH=key).')
param redisEntraAuth bool = true

@description('Storage redundancy.')
@allowed(['Standard_LRS', 'Standard_ZRS', 'Standard_GRS', 'Standard_GZRS'])
param storageSku string = 'Standard_LRS'

// Names the app uses inside storage (tables, queues); app settings below point at them.
@description('Azure Table names the app writes.')
param storageTables object = {
  streamConfigs: 'streamconfigs'
  analytics: 'events'
  deadLetters: 'deadletters'
  audit: 'audit'
  backfills: 'backfills'
}

@description('Storage queues the app uses.')
param storageQueues object = {
  retry: 'delivery-retries'
  vector: 'vector-index'
  backfill: 'backfill-chunks'
}

// ---------------------------------------------------------------------------------------------
// Authentication of callers (issue 6) and vector search (issue 8): values, not secrets
// ---------------------------------------------------------------------------------------------
@description('Caller authentication (AUTH_MODE): jwt, appservice (Easy Auth header) or jwt+appservice. jwt+local-open is local only and refused in Azure.')
@allowed(['jwt', 'appservice', 'jwt+appservice'])
param authMode string = 'jwt'

@description('Accepted JWT issuer(s), comma-separated. Empty = the Entra ID v2.0 and v1.0 issuers of the tenant you deploy into (https://login.microsoftonline.com/<tenant id>/v2.0 and https://sts.windows.net/<tenant id>/ in Azure\'s public cloud).')
param authIssuer string = ''

// Required, no default: nothing in Azure can guess which app registration callers request tokens
// for, and an empty audience would leave every protected route answering 503. azd asks for it when
// GRC_AUTH_AUDIENCE is not set; `az deployment` asks or fails on the missing parameter.
@minLength(1)
@description('Accepted JWT audience(s), comma-separated: the Application (client) ID of the API\'s app registration (the `aud` of v2.0 tokens) and/or its app ID URI (v1.0 tokens).')
param authAudience string

@description('Signing keys URL; empty = jwks_uri of the issuer\'s OpenID configuration.')
param authJwksUrl string = ''

@description('Claim listing the tenants a caller may access.')
param authTenantClaim string = 'tenants'

@description('App role granting every tenant.')
param authAdminRole string = 'Events.Admin'

@description('HMAC key of continuation tokens (PAGE_TOKEN_KEY, kept in Key Vault), at least 32 characters. azd generates one once and keeps it in the environment; with az deployment pass it. A new key ends paged listings in progress (their next page answers 400, the client starts again).')
@secure()
@metadata({ azd: { type: 'generate', config: { length: 48 } } })
param pageTokenKey string

@description('Per-tenant rate limit: token refill (events/s; 0 disables) and bucket size.')
param rateLimitEventsPerSecond int = 1000
param rateLimitBurst int = 5000

@description('Per-tenant backfill throttle (events/s), shared by every instance and every backfill job of the tenant, so live publishing keeps its latency (docs/backfill.md).')
@minValue(1)
param backfillEventsPerSecond int = 500

@description('Share of debug/info log records exported to Application Insights (warnings and errors always).')
param telemetryInfoSampling string = '1.0'

@description('Telemetry exporter of the app: opencensus (opencensus-ext-azure, the default) or opentelemetry (the Azure Monitor OpenTelemetry distro). Same metrics and log fields either way (docs/observability.md).')
@allowed(['opencensus', 'opentelemetry'])
param telemetryBackend string = 'opencensus'

@description('Azure AI Search endpoint for the vector destination (existing service; empty = vector destination off).')
param searchEndpoint string = ''

@description('Azure AI Search index name.')
param searchIndexName string = 'grc-events'

@description('Re-rank hybrid event search with the Azure AI Search semantic ranker (Basic tier or higher, semantic ranker enabled on the service).')
param searchSemanticRanker bool = false

@description('Azure OpenAI endpoint for embeddings (existing resource).')
param openAiEndpoint string = ''

@description('Azure OpenAI embedding deployment name.')
param openAiEmbeddingDeployment string = 'text-embedding-3-small'

@description('Embedding model behind the deployment (recorded in the index).')
param openAiEmbeddingModel string = 'text-embedding-3-small'

@description('Embedding dimensions; 0 = the model\'s own.')
param embeddingDimensions int = 0

@description('Timer schedule (NCRONTAB) of the overdue-assessment scan.')
param overdueSchedule string = '0 */5 * * * *'

// ---------------------------------------------------------------------------------------------
// Alerts
// ---------------------------------------------------------------------------------------------
@description('E-mail receivers of the alert action group.')
param alertEmailReceivers array = []

@description('Create the alert rules.')
param deployAlerts bool = true

// The same thresholds go to the alert rules and to the app (ALERT_*), whose GET /metrics `alerts`
// block reports the same conditions.
@description('Error-rate threshold as a fraction (failed / all deliveries of a tenant over 5 min).')
param alertErrorRate string = '0.05'

@description('Processing (change-feed) delay threshold in seconds.')
param alertDelaySeconds int = 30

@description('Instance memory threshold in percent.')
param alertMemoryPercent int = 80

// ---------------------------------------------------------------------------------------------
// Naming
// ---------------------------------------------------------------------------------------------
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var allTags = union(tags, { 'azd-env-name': environmentName, workload: 'grc-event-streaming' })
var rgName = empty(resourceGroupName) ? 'rg-${environmentName}' : resourceGroupName
var functionAppName = 'func-grc-${resourceToken}'
var deploymentContainerName = 'app-package-${take(resourceToken, 12)}'
// The vault URI with exactly one trailing '/', however cmkKeyVaultUri was written; every key URL
// below is built from it, in one place.
var cmkVaultUri = endsWith(cmkKeyVaultUri, '/') ? cmkKeyVaultUri : '${cmkKeyVaultUri}/'
var cmk = {
  enabled: !empty(cmkKeyVaultUri) && !empty(cmkKeyName) && !empty(cmkUserAssignedIdentityId)
  keyVaultUri: cmkVaultUri
  keyName: cmkKeyName
  // Versionless key URL (Cosmos DB): the service follows key rotation.
  keyUri: '${cmkVaultUri}keys/${cmkKeyName}'
  identityId: cmkUserAssignedIdentityId
}
// Azure Managed Redis takes only a versioned key URL, so its CMK also needs cmkRedisKeyVersion.
var redisCmk = {
  enabled: cmk.enabled && !empty(cmkRedisKeyVersion)
  identityId: cmkUserAssignedIdentityId
  keyUrl: '${cmk.keyUri}/${cmkRedisKeyVersion}'
}
// Entra ID v2.0 issuer of the deploying tenant: the default of authIssuer. Azure's cloud metadata
// gives loginEndpoint with a trailing '/' (https://login.microsoftonline.com/); do not rely on it.
var loginEndpoint = environment().authentication.loginEndpoint
var tenantIssuer = '${loginEndpoint}${endsWith(loginEndpoint, '/') ? '' : '/'}${tenant().tenantId}/v2.0'
// An API whose app registration leaves requestedAccessTokenVersion at its default (null, read as 1)
// gets v1.0 access tokens from Entra ID: iss https://sts.windows.net/<tenant id>/, aud its app ID URI.
// The default accepts both versions from the deploying tenant (the same tenant keys sign both), so
// callers are not refused for a manifest setting (docs/security.md).
var stsEndpoint = contains(loginEndpoint, 'chinacloudapi.cn') ? 'https://sts.chinacloudapi.cn/' : 'https://sts.windows.net/'
var tenantIssuerV1 = '${stsEndpoint}${tenant().tenantId}/'
var effectiveAuthIssuer = empty(authIssuer) ? '${tenantIssuer},${tenantIssuerV1}' : authIssuer
// A bare Application (client) ID: v2.0 tokens carry it as aud, v1.0 tokens its default app ID URI
// (api://<client id>, what "Expose an API" sets). Anything else is taken as given.
var audienceIsClientId = length(authAudience) == 36 && length(split(authAudience, '-')) == 5
var effectiveAuthAudience = audienceIsClientId ? '${authAudience},api://${authAudience}' : authAudience
// Key Vault keeps a deleted vault's name reserved for its 90-day retention (purge protection), so
// `azd down` + `azd up` of the same environment would fail on the name. azure.yaml's postdown hook
// sets a new GRC_KEYVAULT_SALT after every `azd down`; empty keeps the original name.
var keyVaultName = empty(keyVaultNameSalt) ? 'kv-${take(resourceToken, 20)}' : 'kv-${uniqueString(resourceToken, keyVaultNameSalt)}'
// Public access is only switched off when something private can reach the services.
var effectivePublicAccess = usePrivateEndpoints ? publicNetworkAccess : 'Enabled'

resource rg 'Microsoft.Resources/resourceGroups@2021-04-01' = {
  name: rgName
  location: location
  tags: allTags
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    location: location
    tags: allTags
    workspaceName: 'log-${resourceToken}'
    appInsightsName: 'appi-${resourceToken}'
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    location: location
    tags: allTags
    name: 'st${resourceToken}'
    skuName: storageSku
    deploymentContainerName: deploymentContainerName
    tables: [for t in items(storageTables): t.value]
    queues: [for q in items(storageQueues): q.value]
    publicNetworkAccess: effectivePublicAccess
    cmk: cmk
    workspaceId: monitoring.outputs.workspaceId
  }
}

module cosmos 'modules/cosmos.bicep' = {
  name: 'cosmos'
  scope: rg
  params: {
    location: location
    tags: allTags
    accountName: 'cosmos-${resourceToken}'
    databaseName: cosmosDatabaseName
    containerNames: [for c in items(cosmosContainers): c.value]
    leaseContainerName: cosmosLeaseContainerName
    capacityMode: cosmosCapacityMode
    autoscaleMaxThroughput: cosmosAutoscaleMaxThroughput
    publicNetworkAccess: effectivePublicAccess
    cmk: cmk
    workspaceId: monitoring.outputs.workspaceId
  }
}

module eventhubs 'modules/eventhubs.bicep' = {
  name: 'eventhubs'
  scope: rg
  params: {
    location: location
    tags: allTags
    namespaceName: 'evhns-${resourceToken}'
    skuName: eventHubsSku
    capacity: eventHubsCapacity
    disableLocalAuth: eventHubsDisableLocalAuth
    eventHubs: eventHubs
    consumerGroups: eventHubConsumerGroups
    publicNetworkAccess: effectivePublicAccess
    workspaceId: monitoring.outputs.workspaceId
  }
}

module redis 'modules/redis.bicep' = {
  name: 'redis'
  scope: rg
  params: {
    location: location
    tags: allTags
    name: 'redis-${resourceToken}'
    skuName: redisSku
    highAvailability: redisHighAvailability
    publicNetworkAccess: effectivePublicAccess
    cmk: redisCmk
    workspaceId: monitoring.outputs.workspaceId
    accessKeysEnabled: !redisEntraAuth
  }
}

module keyvault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    location: location
    tags: allTags
    name: keyVaultName
    redisName: redis.outputs.name
    redisKeyAuth: !redisEntraAuth
    eventHubsNamespaceName: eventhubs.outputs.name
    eventHubsSendRuleName: eventhubs.outputs.sendRuleName
    pageTokenKey: pageTokenKey
    publicNetworkAccess: effectivePublicAccess
    workspaceId: monitoring.outputs.workspaceId
  }
}

module network 'modules/privateEndpoints.bicep' = if (usePrivateEndpoints) {
  name: 'network'
  scope: rg
  params: {
    location: location
    tags: allTags
    vnetName: 'vnet-${resourceToken}'
    addressPrefix: vnetAddressPrefix
    privateEndpointSubnetPrefix: privateEndpointSubnetPrefix
    functionSubnetPrefix: functionSubnetPrefix
    storageAccountId: storage.outputs.id
    cosmosAccountId: cosmos.outputs.id
    eventHubsNamespaceId: eventhubs.outputs.id
    redisId: redis.outputs.id
    keyVaultId: keyvault.outputs.id
  }
}

// ---------------------------------------------------------------------------------------------
// App settings: every setting the code reads (shared/settings.py) plus the host's own.
// tests/test_settings_inventory.py parses the block between the markers; keep one
// `NAME: value` per line and no nested objects inside it.
// ---------------------------------------------------------------------------------------------
var kafkaBootstrap = '${eventhubs.outputs.name}.servicebus.windows.net:9093'
// settings:start
var appSettings = {
  // Functions host: identity-based host storage and telemetry (Flex: no FUNCTIONS_WORKER_RUNTIME).
  AzureWebJobsStorage__accountName: storage.outputs.name
  APPLICATIONINSIGHTS_CONNECTION_STRING: monitoring.outputs.appInsightsConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'Authorization=AAD'
  TELEMETRY_INFO_SAMPLING: telemetryInfoSampling
  TELEMETRY_BACKEND: telemetryBackend
  // Binding connections with the managed identity: Cosmos DB triggers (connection "COSMOS") and
  // queue triggers (connection "STORAGE_CONNECTION_STRING", a connection string only locally).
  COSMOS__accountEndpoint: cosmos.outputs.endpoint
  STORAGE_CONNECTION_STRING__queueServiceUri: storage.outputs.queueEndpoint
  LOG_LEVEL: logLevel
  HEALTH_TIMEOUT_SECONDS: '2'
  HEALTH_CACHE_SECONDS: '5'
  HEALTH_DEGRADED_MS: '1000'
  // Observability: the alert thresholds shared with alerts.bicep; per-minute tenant monitoring.
  ALERT_ERROR_RATE: alertErrorRate
  ALERT_DELAY_SECONDS: string(alertDelaySeconds)
  ALERT_MEMORY_PERCENT: string(alertMemoryPercent)
  MONITOR_LOOKBACK_MINUTES: '60'
  METRICS_FLUSH_MS: '1000'
  SYSTEM_PERFORMANCE_EVENTS: 'true'
  // Azure Managed Redis: TLS on 10000 (EnterpriseCluster: one endpoint, plain redis-py client);
  // Entra ID token of the identity (default), or the database access key from Key Vault.
  REDIS_HOST: redis.outputs.hostName
  REDIS_PORT: string(redis.outputs.port)
  REDIS_SSL: 'true'
  REDIS_AUTH: redisEntraAuth ? 'entra' : 'key'
  REDIS_PASSWORD: redisEntraAuth ? '' : '@Microsoft.KeyVault(SecretUri=${keyvault.outputs.redisPasswordSecretUri})'
  // Storage: account name + managed identity (no connection string in Azure).
  STORAGE_ACCOUNT_NAME: storage.outputs.name
  STREAM_CONFIG_TABLE: storageTables.streamConfigs
  STREAM_CONFIG_CACHE_SECONDS: '30'
  ANALYTICS_TABLE: storageTables.analytics
  DEADLETTER_TABLE: storageTables.deadLetters
  AUDIT_TABLE: storageTables.audit
  BACKFILL_TABLE: storageTables.backfills
  BACKFILL_QUEUE: storageQueues.backfill
  BACKFILL_EVENTS_PER_SECOND: string(backfillEventsPerSecond)
  BACKFILL_MAX_CONCURRENT_JOBS: '2'
  PAGE_TOKEN_KEY: '@Microsoft.KeyVault(SecretUri=${keyvault.outputs.pageTokenKeySecretUri})'
  RETRY_QUEUE: storageQueues.retry
  IDEMPOTENCY_WINDOW_SECONDS: '86400'
  IDEMPOTENCY_PENDING_SECONDS: '300'
  // Cosmos DB change capture (SDK calls of the app; the triggers use COSMOS__accountEndpoint).
  COSMOS_DB_ENDPOINT: cosmos.outputs.endpoint
  COSMOS_DB_DATABASE: cosmosDatabaseName
  COSMOS_RISKS_CONTAINER: cosmosContainers.risks
  COSMOS_CONTROLS_CONTAINER: cosmosContainers.controls
  COSMOS_ASSESSMENTS_CONTAINER: cosmosContainers.assessments
  COSMOS_COMPLIANCE_CONTAINER: cosmosContainers.compliance
  COSMOS_POLICIES_CONTAINER: cosmosContainers.policies
  COSMOS_LEASE_CONTAINER: cosmosLeaseContainerName
  CHANGEFEED_STATE_TTL_DAYS: '400'
  CHANGEFEED_DEDUP_TTL_HOURS: '168'
  OVERDUE_SCHEDULE: overdueSchedule
  // Event Hubs: Kafka endpoint with OAUTHBEARER (managed identity), or SASL PLAIN with the
  // connection string from Key Vault when SAS is enabled; AMQP as the second transport.
  KAFKA_BROKER: kafkaBootstrap
  KAFKA_SECURITY: eventHubsDisableLocalAuth ? 'oauth' : 'sasl-plain'
  KAFKA_DEFAULT_TOPIC: eventHubs[0].name
  KAFKA_DELIVERY_TIMEOUT_MS: '30000'
  KAFKA_STATS_INTERVAL_MS: '15000'
  KAFKA_LINGER_MS: '1'
  EVENTHUBS_FULLY_QUALIFIED_NAMESPACE: '${eventhubs.outputs.name}.servicebus.windows.net'
  EVENTHUBS_TRANSPORT: 'kafka'
  EVENTHUBS_CONNECTION_STRING: eventHubsDisableLocalAuth ? '' : '@Microsoft.KeyVault(SecretUri=${keyvault.outputs.eventHubsConnectionSecretUri})'
  // Caller authentication and tenant isolation (docs/security.md).
  AUTH_MODE: authMode
  AUTH_ISSUER: effectiveAuthIssuer
  AUTH_AUDIENCE: effectiveAuthAudience
  AUTH_JWKS_URL: authJwksUrl
  AUTH_TENANT_CLAIM: authTenantClaim
  AUTH_ADMIN_ROLE: authAdminRole
  AUTH_LEEWAY_SECONDS: '60'
  AUTH_JWKS_CACHE_SECONDS: '3600'
  AUTH_JWKS_MIN_REFRESH_SECONDS: '60'
  RATE_LIMIT_EVENTS_PER_SECOND: string(rateLimitEventsPerSecond)
  RATE_LIMIT_BURST: string(rateLimitBurst)
  // Vector destination: Azure AI Search + Azure OpenAI embeddings, both with the managed identity.
  VECTOR_BACKEND: 'azure-search'
  VECTOR_QUEUE: storageQueues.vector
  VECTOR_SEARCH_MAX_K: '50'
  AZURE_SEARCH_ENDPOINT: searchEndpoint
  AZURE_SEARCH_INDEX: searchIndexName
  AZURE_SEARCH_SEMANTIC_RANKER: string(searchSemanticRanker)
  EMBEDDING_BACKEND: 'azure-openai'
  EMBEDDING_DIMENSIONS: string(embeddingDimensions)
  EMBEDDING_BATCH_SIZE: '64'
  AZURE_OPENAI_ENDPOINT: openAiEndpoint
  AZURE_OPENAI_DEPLOYMENT: openAiEmbeddingDeployment
  AZURE_OPENAI_MODEL: openAiEmbeddingModel
  AZURE_OPENAI_API_VERSION: '2024-10-21'
}
// settings:end

module functionApp 'modules/functionapp.bicep' = {
  name: 'functionapp'
  scope: rg
  params: {
    location: location
    tags: allTags
    name: functionAppName
    planName: 'plan-${resourceToken}'
    storageAccountName: storage.outputs.name
    deploymentContainerName: deploymentContainerName
    instanceMemoryMB: functionInstanceMemoryMB
    maximumInstanceCount: functionMaximumInstanceCount
    alwaysReadyHttpInstances: functionAlwaysReadyInstances
    zoneRedundant: functionZoneRedundant
    appSettings: appSettings
    publicNetworkAccess: apiPublicNetworkAccess
    virtualNetworkSubnetId: usePrivateEndpoints ? network.outputs.functionSubnetId : ''
    workspaceId: monitoring.outputs.workspaceId
  }
}

module roles 'modules/roles.bicep' = {
  name: 'roles'
  scope: rg
  params: {
    principalId: functionApp.outputs.principalId
    storageAccountName: storage.outputs.name
    deploymentContainerName: deploymentContainerName
    cosmosAccountName: cosmos.outputs.name
    eventHubsNamespaceName: eventhubs.outputs.name
    keyVaultName: keyvault.outputs.name
    appInsightsName: monitoring.outputs.appInsightsName
    redisName: redis.outputs.name
    redisEntraAuth: redisEntraAuth
    eventHubsConnectionSecret: !eventHubsDisableLocalAuth
  }
}

module alerts 'modules/alerts.bicep' = if (deployAlerts) {
  name: 'alerts'
  scope: rg
  params: {
    location: location
    tags: allTags
    namePrefix: 'grc-${environmentName}'
    appInsightsId: monitoring.outputs.appInsightsId
    emailReceivers: alertEmailReceivers
    errorRate: alertErrorRate
    delayMs: alertDelaySeconds * 1000
    memoryPercent: alertMemoryPercent
  }
}

// The operations workbook: Application Insights > Monitoring > Workbooks (infra/README.md). Its alert
// lines are the alert rules' thresholds.
module workbook 'modules/workbook.bicep' = {
  name: 'workbook'
  scope: rg
  params: {
    location: location
    tags: allTags
    displayName: 'GRC event streaming operations (${environmentName})'
    appInsightsId: monitoring.outputs.appInsightsId
    storageAccountId: storage.outputs.id
    retryQueue: storageQueues.retry
    errorRate: alertErrorRate
    delayMs: alertDelaySeconds * 1000
    memoryPercent: alertMemoryPercent
  }
}

// azd reads these outputs into the environment (.azure/<env>/.env).
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output SERVICE_API_NAME string = functionApp.outputs.name
output SERVICE_API_URI string = 'https://${functionApp.outputs.defaultHostName}'
output COSMOS_DB_ENDPOINT string = cosmos.outputs.endpoint
output STORAGE_ACCOUNT_NAME string = storage.outputs.name
output KAFKA_BROKER string = kafkaBootstrap
output REDIS_HOST string = redis.outputs.hostName
output KEY_VAULT_NAME string = keyvault.outputs.name
