import OrchestratorService
import OrreryPlacement
import OrreryProto
import SwiftProtobuf
import Testing

@Suite("Workload spec validation")
struct WorkloadSpecValidationTests {
    static func valid() -> Orrery_Orchestrator_V1_WorkloadSpec {
        .with {
            $0.name = "pipeline"
            $0.allocations = [
                .with {
                    $0.name = "api"
                    $0.executor = .process
                    $0.artifact = .with { $0.text = "#!/bin/sh\necho hi\n" }
                    $0.resources = .with {
                        $0.cpuCores = 1
                        $0.ramMib = 256
                    }
                    $0.replicas = 2
                    $0.maxDurationSeconds = 600
                },
                .with {
                    $0.name = "db"
                    $0.executor = .process
                    $0.artifact = .with {
                        $0.url = "https://example.org/db.tar.gz"
                        $0.sha256 = String(repeating: "ab", count: 32)
                    }
                    $0.command = "./db"
                    $0.resources = .with {
                        $0.cpuCores = 2
                        $0.ramMib = 1024
                    }
                    $0.maxDurationSeconds = 600
                    $0.constraints = .with {
                        $0.location = .with { $0.countries = ["de"] }
                        $0.maxPricePerHour = 900
                    }
                },
            ]
            $0.constraints = .with {
                $0.location = .with { $0.countries = ["DE", "FR"] }
                $0.maxPricePerHour = 500
                $0.labels = ["tier": "datacenter"]
            }
            $0.edges = [
                .with {
                    $0.from = "api"; $0.to = "db"; $0.maxRttMs = 20
                }
            ]
            $0.budget = 10_000
        }
    }

    @Test("a valid spec becomes a placement request with the ensemble's constraints merged into each allocation")
    func converts() throws {
        let request = try WorkloadSpecValidator.validate(Self.valid())
        #expect(request.allocations.map(\.name) == ["api", "db"])
        #expect(request.allocations[0].replicas == 2)
        #expect(request.allocations[0].constraints.acceptCountries == ["DE", "FR"])
        #expect(request.allocations[1].constraints.acceptCountries == ["DE"], "accept lists intersect")
        #expect(request.allocations[1].constraints.maxPricePerHour == 500, "the tighter ceiling wins")
        #expect(request.allocations[1].constraints.requiredLabels == ["tier": "datacenter"])
        #expect(request.edges == [LatencyEdge(from: 0, to: 1, maxRTTMilliseconds: 20)])
        #expect(request.budget == 10_000)
        #expect(request.allocations[0].durationSeconds == 600)
    }

    struct Case: Sendable, CustomTestStringConvertible {
        let mutate: @Sendable (inout Orrery_Orchestrator_V1_WorkloadSpec) -> Void
        let message: String
        init(_ mutate: @escaping @Sendable (inout Orrery_Orchestrator_V1_WorkloadSpec) -> Void, _ message: String) {
            self.mutate = mutate
            self.message = message
        }
        var testDescription: String { message }
    }

    /// A partner of another deployment, as `reaches` lists it.
    static func reach(
        _ name: String, deployment: String = "dep_" + String(repeating: "c", count: 26), allocation: String = "store",
        ports: [UInt32] = [5432]
    ) -> Orrery_Orchestrator_V1_ForeignPartner {
        .with {
            $0.name = name
            $0.deploymentID = deployment
            $0.allocation = allocation
            $0.ports = ports
        }
    }

    static let cases: [Case] = [
        // Other deployments' partners.
        Case({ s in s.allocations[0].reaches = [reach("DB")] }, "allocations[0].reaches[0].name: lowercase letters"),
        Case(
            { s in s.allocations[0].reaches = [reach("db")] },
            "allocations[0].reaches[0].name: 'db' is the name of an allocation"),
        Case(
            { s in s.allocations[0].reaches = [reach("x"), reach("x")] },
            "allocations[0].reaches[1].name: 'x' is already"),
        Case(
            { s in s.allocations[0].reaches = [reach("x", deployment: "dep_1")] },
            "allocations[0].reaches[0].deployment_id: a deployment id"),
        Case(
            { s in s.allocations[0].reaches = [reach("x", allocation: "")] },
            "allocations[0].reaches[0].allocation: an allocation name"),
        Case(
            { s in s.allocations[0].reaches = [reach("x", ports: [])] }, "allocations[0].reaches[0].ports: 1…16 ports"),
        Case(
            { s in s.allocations[0].reaches = [reach("x", ports: [0])] },
            "allocations[0].reaches[0].ports: each 1…65535"),
        Case(
            { s in s.allocations[0].reaches = [reach("x", ports: [80, 80])] },
            "allocations[0].reaches[0].ports: each port once"),
        Case(
            { s in s.allocations[0].reaches = (0..<17).map { reach("p\($0)") } }, "allocations[0].reaches: at most 16"),
        // Ports and health checks.
        Case(
            { s in
                s.allocations[0].ports = [
                    .with {
                        $0.name = "Web"; $0.port = 80
                    }
                ]
            }, "allocations[0].ports[0].name: 1…15 of a-z"),
        Case(
            { s in
                s.allocations[0].ports = [
                    .with {
                        $0.name = "web"; $0.port = 80
                    },
                    .with {
                        $0.name = "web"; $0.port = 81
                    },
                ]
            },
            "allocations[0].ports[1].name: 'web' is already the name of ports[0]"),
        Case(
            { s in
                s.allocations[0].ports = [
                    .with {
                        $0.name = "a"; $0.port = 80
                    },
                    .with {
                        $0.name = "b"; $0.port = 80
                    },
                ]
            },
            "allocations[0].ports[1].port: 80 is already ports[0]"),
        Case(
            { s in
                s.allocations[0].ports = [
                    .with {
                        $0.name = "web"; $0.port = 70000
                    }
                ]
            }, "allocations[0].ports[0].port: 1…65535, got 70000"),
        Case(
            { s in
                s.allocations[0].ports = [
                    .with {
                        $0.name = "web"; $0.port = 80; $0.expose = .public; $0.protocol = .tcp
                    }
                ]
            },
            "allocations[0].ports[0].expose: the ingress carries HTTP only"),
        Case(
            { s in
                let exposed = Orrery_Orchestrator_V1_Port.with {
                    $0.name = "web"; $0.port = 80; $0.expose = .private
                }
                var first = s.allocations[0]
                first.name = "frontend-for-the-shop-a"
                first.ports = [exposed]
                var twin = first
                twin.name = "frontend-for-the-shop-b"
                s.allocations += [first, twin]
            },
            "allocations[3].ports: port web of frontend-for-the-shop-b would have the same host name as port web of frontend-for-the-shop-a's"
        ),
        Case(
            { s in
                s.allocations[0].ports = [
                    .with {
                        $0.name = "web"; $0.port = 80; $0.protocol = .UNRECOGNIZED(9)
                    }
                ]
            },
            "allocations[0].ports[0].protocol: PROTOCOL_HTTP or PROTOCOL_TCP, got 9"),
        Case(
            { s in
                s.allocations[0].ports = Array(
                    repeating: .with {
                        $0.name = "p"; $0.port = 1
                    }, count: 17)
            }, "allocations[0].ports: at most 16"),
        Case(
            { s in s.allocations[0].health = .with { $0.intervalSeconds = 5 } },
            "allocations[0].health: a probe is needed"),
        Case(
            { s in s.allocations[0].health = .with { $0.tcp = .with { $0.port = 0 } } },
            "allocations[0].health.tcp.port: 1…65535, got 0"),
        Case(
            { s in s.allocations[0].health = .with { $0.exec = .with { $0.command = [] } } },
            "allocations[0].health.exec.command: 1…64 words"),
        Case(
            { s in s.allocations[0].health = .with { $0.exec = .with { $0.command = ["A=1", "true"] } } },
            "allocations[0].health.exec.command: 1…64 words, 4 KiB in all, no NUL byte, the program first (its name without '=')"
        ),
        Case(
            { s in
                s.allocations[0].health = .with {
                    $0.http = .with {
                        $0.port = 80; $0.path = "healthz"
                    }
                }
            },
            "allocations[0].health.http.path: an absolute path"),
        Case(
            { s in
                s.allocations[0].health = .with {
                    $0.http = .with {
                        $0.port = 80; $0.path = "/a b"
                    }
                }
            },
            "allocations[0].health.http.path: an absolute path"),
        Case(
            { s in
                s.allocations[0].health = .with {
                    $0.tcp = .with { $0.port = 80 }; $0.intervalSeconds = 2; $0.timeoutSeconds = 5
                }
            },
            "allocations[0].health.timeout_seconds: at most the interval (2 s), got 5"),
        Case(
            { s in
                s.allocations[0].health = .with {
                    $0.tcp = .with { $0.port = 80 }; $0.intervalSeconds = 301
                }
            }, "allocations[0].health.interval_seconds: 1…300"),
        Case(
            { s in
                s.allocations[0].health = .with {
                    $0.tcp = .with { $0.port = 80 }; $0.unhealthyThreshold = 11
                }
            }, "allocations[0].health.unhealthy_threshold: 1…10"),
        Case(
            { s in
                s.allocations[0].health = .with {
                    $0.tcp = .with { $0.port = 80 }; $0.startPeriodSeconds = 3601
                }
            }, "allocations[0].health.start_period_seconds: 0…3600"),
        Case(
            { s in
                s.allocations[0].health = .with {
                    $0.tcp = .with { $0.port = 80 }; $0.maxRestarts = 101
                }
            }, "allocations[0].health.max_restarts: 0…100"),
        Case({ s in s.name = "" }, "name: 1…100 characters"),
        Case({ s in s.allocations = [] }, "allocations: at least one allocation is needed"),
        Case(
            { s in s.allocations[1].name = "api" }, "allocations[1].name: 'api' is already the name of allocations[0]"),
        Case({ s in s.allocations[0].name = "API!" }, "allocations[0].name: lowercase letters"),
        Case({ s in s.allocations[0].executor = .unspecified }, "allocations[0].executor: required"),
        Case({ s in s.allocations[0].executor = .UNRECOGNIZED(7) }, "allocations[0].executor: unknown executor 7"),
        Case({ s in s.allocations[0].resources.cpuCores = 0 }, "allocations[0].resources.cpu_cores: 1…1024, got 0"),
        Case({ s in s.allocations[0].resources.ramMib = 0 }, "allocations[0].resources.ram_mib"),
        Case(
            { s in s.allocations[0].resources.gpu.model = "A100" },
            "allocations[0].resources.gpu.count: 0, yet a GPU is described"),
        Case({ s in s.allocations[1].artifact.sha256 = "" }, "allocations[1].artifact.sha256: required for a URL"),
        Case({ s in s.allocations[1].artifact.url = "ftp://x" }, "allocations[1].artifact.url: an http(s) URL"),
        Case(
            { s in s.allocations[0].artifact.sha256 = String(repeating: "0", count: 64) },
            "allocations[0].artifact.sha256: does not match the inline text"),
        Case({ s in s.allocations[1].command = "" }, "allocations[1].command: required with a url artifact"),
        Case({ s in s.allocations[0].artifact = .init() }, "allocations[0].artifact: required"),
        Case({ s in s.allocations[0].env = ["ORRERY_X": "1"] }, "allocations[0].env.ORRERY_X"),
        Case({ s in s.allocations[0].outputs = ["../etc/passwd"] }, "allocations[0].outputs[0]: a relative path"),
        Case({ s in s.allocations[0].replicas = 1000 }, "allocations[0].replicas: at most 100"),
        Case(
            { s in s.allocations[0].maxDurationSeconds = 0 },
            "allocations[0].max_duration_seconds: required with a budget"),
        Case({ s in s.edges[0].to = "cache" }, "edges[0].to: no allocation is named 'cache'"),
        Case({ s in s.edges[0].to = "api" }, "edges[0]: an edge joins two different allocations"),
        Case({ s in s.edges[0].maxRttMs = 0 }, "edges[0].max_rtt_ms: above 0"),
        Case(
            { s in s.constraints.location.countries = ["Germany"] },
            "constraints.location.countries[0]: an ISO 3166-1 alpha-2 code"),
        Case(
            { s in s.allocations[1].constraints.location.countries = ["US"] },
            "allocations[1].constraints.location.countries: shares no country"),
        Case(
            { s in s.allocations[1].constraints.labels = ["tier": "edge"] },
            "allocations[1].constraints.labels.tier: 'edge' contradicts"),
        Case({ s in s.constraints.minReputation = 2 }, "constraints.min_reputation: 0…1"),
        Case({ s in s.sla.availability = 1.5 }, "sla.availability: a fraction between 0 and 1"),
        Case({ s in s.penalties.availabilityBps = 20_000 }, "penalties.availability_bps: at most 10000"),
        Case({ s in s.constraints.deniedProviders = ["bob"] }, "constraints.denied_providers[0]: not a did:key"),
        Case(
            { s in s.constraints.latency = [.with { $0.maxRttMs = 10 }] },
            "constraints.latency[0]: a point or a landmark is required"),
        Case(
            { s in
                s.constraints.location.within = .with {
                    $0.center = .with { $0.latitude = 95 }; $0.radiusKm = 10
                }
            }, "constraints.location.within.center.latitude: -90…90"),
        Case(
            { s in s.edges = Array(repeating: s.edges[0], count: 1024) }, "edges: at most 128, got 1024"),
        Case({ s in s.edges.append(s.edges[0]) }, "edges[1]: joins the same allocations as edges[0]"),
        Case(
            { s in s.constraints.location.countries = Array(repeating: "DE", count: 65) },
            "constraints.location.countries: at most 64 entries, got 65"),
        Case(
            { s in s.constraints.labels = Dictionary(uniqueKeysWithValues: (0..<65).map { ("k\($0)", "v") }) },
            "constraints.labels: at most 64 entries, got 65"),
        Case(
            { s in s.allocations[0].env = Dictionary(uniqueKeysWithValues: (0..<300).map { ("V\($0)", "v") }) },
            "allocations[0].env: at most 256 variables, got 300"),
        Case(
            { s in s.allocations[0].env = ["BIG": String(repeating: "x", count: 40_000)] },
            "allocations[0].env.BIG: at most 32768 bytes"),
        Case(
            { s in
                s.allocations[0].inputs = [
                    .with {
                        $0.name = "Data"; $0.source = "s3://data/x"; $0.sha256 = hex
                    }
                ]
            },
            "allocations[0].inputs[0].name: 1…63 of a-z"),
        Case(
            { s in
                s.allocations[0].inputs = [
                    .with {
                        $0.name = "d"; $0.source = "ftp://x/y"; $0.sha256 = hex
                    }
                ]
            },
            "allocations[0].inputs[0].source: 'ftp://x/y' is not https://"),
        Case(
            { s in
                s.allocations[0].inputs = [
                    .with {
                        $0.name = "d"; $0.source = "https://x.org/d"
                    }
                ]
            },
            "allocations[0].inputs[0].sha256: required"),
        Case(
            { s in
                s.allocations[0].inputs = [
                    .with {
                        $0.name = "d"; $0.source = "https://x.org/d"; $0.sha256 = hex; $0.mount = "/etc/passwd"
                    }
                ]
            },
            "allocations[0].inputs[0].mount: '/etc/passwd' is not a normalised path under /inputs/"),
        Case(
            { s in
                s.allocations[0].inputs = [
                    .with {
                        $0.name = "a"; $0.source = "https://x.org/a"; $0.sha256 = hex; $0.mount = "/inputs/d"
                    },
                    .with {
                        $0.name = "b"; $0.source = "https://x.org/b"; $0.sha256 = hex; $0.mount = "/inputs/d/e"
                    },
                ]
            },
            "allocations[0].inputs: 'b' would appear at /inputs/d/e, which clashes"),
        Case(
            { s in
                s.allocations[0].inputs = (0..<33).map { i in
                    .with {
                        $0.name = "i\(i)"; $0.source = "https://x.org/\(i)"; $0.sha256 = hex
                    }
                }
            },
            "allocations[0].inputs: at most 32"),
        Case(
            { s in s.allocations[0].outputsTo = "s3://results/run" },
            "allocations[0].outputs_to: given, yet no outputs are declared"),
        Case(
            { s in
                s.allocations[0].outputs = ["r.bin"]
                s.allocations[0].outputsTo = "https://results/run"
            },
            "allocations[0].outputs_to: s3://BUCKET/PREFIX"),
    ]

    static let hex = String(repeating: "ab", count: 32)

    @Test(
        "every bad input is named by its field path",
        arguments: Self.cases)
    func refuses(_ bad: Case) {
        let message = bad.message
        var spec = Self.valid()
        bad.mutate(&spec)
        do {
            _ = try WorkloadSpecValidator.validate(spec)
            Issue.record("accepted; expected \(message)")
        } catch {
            #expect(error.lines.contains { $0.hasPrefix(message) || $0.contains(message) }, "\(error.lines)")
        }
    }

    @Test("ports and a health check within their bounds are accepted")
    func servicesAccepted() throws {
        var spec = Self.valid()
        spec.allocations[0].ports = [
            .with {
                $0.name = "http"
                $0.port = 8080
                $0.protocol = .http
            },
            .with {
                $0.name = "metrics-1"
                $0.port = 9100
                $0.expose = .ensemble
            },
        ]
        spec.allocations[0].health = .with {
            $0.http = .with {
                $0.port = 8080
                $0.path = "/healthz?deep=1"
            }
            $0.intervalSeconds = 5
            $0.timeoutSeconds = 5
            $0.maxRestarts = 0
        }
        spec.allocations[1].health = .with { $0.tcp = .with { $0.port = 5432 } }
        _ = try WorkloadSpecValidator.validate(spec)
    }

    @Test("all problems are reported at once")
    func reportsEverything() {
        var spec = Self.valid()
        spec.name = ""
        spec.allocations[0].resources.cpuCores = 0
        spec.edges[0].to = "nowhere"
        #expect(throws: WorkloadSpecValidator.Problems.self) { try WorkloadSpecValidator.validate(spec) }
        do {
            _ = try WorkloadSpecValidator.validate(spec)
        } catch {
            #expect(error.lines.count == 3)
        }
    }
}
